"""What a site page's table is made of: cells, rows and tables, as the templates render them (macros.html.j2)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SiteCell:
    text: str
    sort: str | None = None
    css: str = ""
    href: str | None = None
    #: shown on hover (the figures behind a pivot cell: median, IQR, % roofline)
    title: str | None = None
    #: a short mark after the text ("untrusted", "fastest"), with `badge_title` on hover (the reason)
    badge: str | None = None
    badge_title: str | None = None


@dataclass
class SiteRow:
    cells: list[SiteCell]
    filters: dict[str, str] = field(default_factory=dict)


@dataclass
class SiteTable:
    id: str
    title: str
    headers: list[str]
    rows: list[SiteRow]
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    text_columns: set[int] = field(default_factory=set)
    #: header cells shown apart (a reference's column in a pivot or matrix)
    muted_columns: set[int] = field(default_factory=set)
