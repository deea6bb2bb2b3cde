"""Publishers: one small class per output format, each with a `name` and `publish(board, out_dir)` (asv's lesson).

Every publisher renders the same `normbench.leaderboard.Leaderboard`, so the formats never disagree. The PNG
publisher runs first, so the markdown, HTML and site pages link only plots that exist; the badges run before the
site, which shows them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from normbench.leaderboard import Leaderboard
from normbench.publish.badges import BadgePublisher
from normbench.publish.csv import CsvPublisher
from normbench.publish.html import HtmlPublisher
from normbench.publish.markdown import MarkdownPublisher
from normbench.publish.plots import PlotPublisher
from normbench.publish.site import SitePublisher


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
