"""Publishers: one small class per output format, each with a `name` and `publish(board, out_dir)` (asv's lesson).

Every publisher renders the same `normbench.leaderboard.Leaderboard`, so the formats never disagree. The PNG
publisher runs first, so the markdown, HTML and site pages link only plots that exist; the badges run before the
site, which shows them.

`write_leaderboard` reads a results folder and runs them: here, above both the store (normbench.results) and the
leaderboard model (normbench.leaderboard), so neither imports its renderers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from normbench.board.build import build_leaderboard
from normbench.board.model import Leaderboard
from normbench.publish.badges import BadgePublisher
from normbench.publish.csv import CsvPublisher
from normbench.publish.html import HtmlPublisher
from normbench.publish.markdown import MarkdownPublisher
from normbench.publish.plots import PlotPublisher
from normbench.publish.site import SitePublisher
from normbench.store.errors import ForgedRecord
from normbench.store.scan import scan_records


class Publisher(Protocol):
    name: str

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]: ...


#: in the order they run
PUBLISHERS: dict[str, Publisher] = {p.name: p for p in (PlotPublisher(), MarkdownPublisher(), CsvPublisher(),
                                                        HtmlPublisher(), BadgePublisher(), SitePublisher())}


def publish_all(board: Leaderboard, out_dir: Path, formats: Iterable[str] | None = None) -> list[Path]:
    """Run the chosen publishers (all by default) into out_dir; returns every file written."""
    chosen = list(formats) if formats is not None else list(PUBLISHERS)
    unknown = sorted(set(chosen) - set(PUBLISHERS))
    if unknown:
        raise ValueError(f"unknown leaderboard format(s) {unknown}; known: {list(PUBLISHERS)}")
    written: list[Path] = []
    for name, publisher in PUBLISHERS.items():
        if name in chosen:
            written += publisher.publish(board, Path(out_dir))
    return written


def write_leaderboard(results_dir: Path, formats: Iterable[str] | None = None,
                      sealed: dict[Path, bytes] | None = None) -> Path:
    """Render every stored record under results_dir into LEADERBOARD.md and friends; returns the markdown path.
    Records this normbench cannot read are refused (listed in the leaderboard), never misread. `sealed` maps the
    records the calling run wrote to its key (normbench.store.seal): one whose bytes are not what that run sealed
    is refused too, and after rendering, ForgedRecord is raised naming every such file."""
    records, errors = scan_records(Path(results_dir), sealed)
    board = build_leaderboard(records, refused=errors)
    written = publish_all(board, Path(results_dir), formats)
    forged = [str(e) for e in errors if isinstance(e, ForgedRecord)]
    if forged:
        raise ForgedRecord("; ".join(forged), problems=forged)
    return next((p for p in written if p.suffix == ".md"), Path(results_dir) / "LEADERBOARD.md")
