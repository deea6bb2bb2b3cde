"""Publishers: one small class per output format, each with a `name`, the `outputs` it writes (globs relative to the
folder it publishes into), whether a plain `normbench leaderboard` runs it (`default`) and `publish(board, out_dir)`
(asv's lesson).

Every publisher renders the same `normbench.board.model.Leaderboard`, so the formats never disagree. They run in the
order of PUBLISHERS: the PNG publisher first, so the markdown, HTML and site pages link only plots that exist; the
badges before the site, which shows them. The terminal summary and the ecosystem report run only where named
(`--format terminal`, `--format ecosystem`).

`write_leaderboard` reads a results folder (through normbench.board, which reads it through normbench.store) and
runs them: the store and the board never import their renderers (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path
from typing import Protocol

from normbench.board.build import read_leaderboard
from normbench.board.model import Leaderboard
from normbench.publish.badges import BadgePublisher
from normbench.publish.csv import CsvPublisher
from normbench.publish.ecosystem import EcosystemPublisher
from normbench.publish.html import HtmlPublisher
from normbench.publish.markdown import MarkdownPublisher
from normbench.publish.plots import PlotPublisher
from normbench.publish.site import SitePublisher
from normbench.publish.terminal import TerminalPublisher
from normbench.store.errors import ForgedRecord


class Publisher(Protocol):
    name: str
    #: the files it may write, as globs relative to out_dir (publish_all refuses a file outside them)
    outputs: tuple[str, ...]
    #: whether a plain `normbench leaderboard` (and every run's rendering) runs it
    default: bool

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]: ...


#: every publisher, in the order they run
PUBLISHERS: tuple[Publisher, ...] = (PlotPublisher(), MarkdownPublisher(), CsvPublisher(), HtmlPublisher(),
                                     BadgePublisher(), SitePublisher(), TerminalPublisher(), EcosystemPublisher())


def format_names(default_only: bool = False) -> list[str]:
    """The publishers' names in the order they run (`--format` takes them)."""
    return [p.name for p in PUBLISHERS if p.default or not default_only]


def _check_outputs(publisher: Publisher, written: list[Path], out_dir: Path) -> None:
    # the outputs a publisher declares are what docs and --format promise: a file outside them is a bug of it
    for path in written:
        relative = Path(path).relative_to(out_dir).as_posix() if Path(path).is_relative_to(out_dir) else str(path)
        if not any(fnmatch(relative, glob) for glob in publisher.outputs):
            raise ValueError(f"publisher {publisher.name!r} wrote {path}, outside its outputs {publisher.outputs}")


def publish_all(board: Leaderboard, out_dir: Path, formats: Iterable[str] | None = None,
                publishers: tuple[Publisher, ...] = PUBLISHERS) -> list[Path]:
    """Run the chosen publishers (the default ones unless `formats` names others) into out_dir, in the order of
    `publishers`; returns every file written."""
    known = [p.name for p in publishers]
    chosen = list(formats) if formats is not None else [p.name for p in publishers if p.default]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"unknown leaderboard format(s) {unknown}; known: {known}")
    written: list[Path] = []
    for publisher in publishers:
        if publisher.name in chosen:
            paths = publisher.publish(board, Path(out_dir))
            _check_outputs(publisher, paths, Path(out_dir))
            written += paths
    return written


def write_leaderboard(results_dir: Path, formats: Iterable[str] | None = None,
                      sealed: dict[Path, bytes] | None = None) -> Path:
    """Render every stored record under results_dir into LEADERBOARD.md and friends; returns the markdown path.
    Records this normbench cannot read are refused (listed in the leaderboard), never misread. `sealed` maps the
    records the calling run wrote to its key (normbench.store.seal): one whose bytes are not what that run sealed
    is refused too, and after rendering, ForgedRecord is raised naming every such file."""
    board, errors = read_leaderboard(Path(results_dir), sealed)
    written = publish_all(board, Path(results_dir), formats)
    forged = [str(e) for e in errors if isinstance(e, ForgedRecord)]
    if forged:
        raise ForgedRecord("; ".join(forged), problems=forged)
    return next((p for p in written if p.suffix == ".md"), Path(results_dir) / "LEADERBOARD.md")
