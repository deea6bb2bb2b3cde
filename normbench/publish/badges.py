"""site/badges/<implementation>.svg: shields.io-style badges for a plugin author's README.

One conformance badge per implementation, in the words of normbench.verdicts ("normbench | conforms" green,
"normbench | conforms, 2 known failures" yellow-green, "normbench | 2 failing" red, "normbench | not judged" grey)
and, for a benchmarked implementation, "normbench | 91 % roofline" beside it (<implementation>-roofline.svg), over its
trusted figures only ("normbench | untrusted benchmark" when it has no other, normbench.bench.trust). Flat
style, no external font or image: the SVG renders anywhere.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from normbench import deploy
from normbench.board.model import Leaderboard
from normbench.board.performance import geomean
from normbench.verdicts import CONFORMS, KNOWN_ONLY, NOT_CONFORMING, NOT_JUDGED, Status, status_of

SITE_DIR = "site"
BADGES_DIR = "badges"
LABEL = "normbench"
#: per status key (normbench.verdicts), shields.io's brightgreen, yellowgreen, red, grey; and blue for the roofline
COLOURS = {CONFORMS: "#4c1", KNOWN_ONLY: "#a4a61d", NOT_CONFORMING: "#e05d44", NOT_JUDGED: "#9f9f9f",
           "roofline": "#007ec6"}


#: a name used as its own file name: safe characters, short, and never of the form another name's file takes
#: (``<clean>-<12 hex>``, ``<name>-roofline``), so two names never share a file
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
_HASHED = re.compile(r"-[0-9a-f]{12}$")


def slug(name: str) -> str:
    """A file name for an implementation (badges, site pages): its name where it is safe, else a cleaned name of at
    most 64 characters plus 12 hex digits of its SHA-256, so a 5000-character name still fits a file name (255 bytes)
    and names that clean alike ("a/b", "a:b", or one spelled like the other's hashed slug) get different files."""
    if _SAFE_NAME.fullmatch(name) and not _HASHED.search(name) and not name.endswith(("-roofline", ".")):
        return name
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:64].strip("._-") or "impl"
    return f"{clean}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def implementation_status(outcomes: list[dict[str, Any]]) -> Status:
    """An implementation's conformance over every machine's records (normbench.verdicts.status_of: fail closed)."""
    return status_of(outcomes)


def outcomes_by_implementation(board: Leaderboard) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for outcomes in board.outcomes.values():
        for o in outcomes:
            out.setdefault(o["implementation"], []).append(o)
    return out


def roofline_percent(board: Leaderboard) -> dict[str, float]:
    """Implementation -> geometric mean % roofline over its benchmarked cases (over machines where several),
    read from the ranking table so the badge and the leaderboard agree."""
    try:
        ranking = board.table("ranking")
    except KeyError:
        return {}
    columns = [i for i, h in enumerate(ranking.headers) if h.startswith("geomean % roofline")]
    name_col = ranking.headers.index("implementation")
    out = {}
    for row in ranking.rows:
        value = geomean(row[i] for i in columns if isinstance(row[i], int | float))
        if value is not None:
            out[str(row[name_col])] = value
    return out


def untrusted_figures(board: Leaderboard) -> dict[str, int]:
    """Implementation -> how many of its eager benchmark figures are untrusted (left out of the % roofline badge)."""
    out: dict[str, int] = {}
    for entries in board.bench.values():
        for e in entries:
            if e.get("untrusted") and e.get("family") != "roofline" and deploy.record_name(e) == deploy.DEFAULT.name:
                out[str(e["implementation"])] = out.get(str(e["implementation"]), 0) + 1
    return out


def _text_width(text: str) -> int:
    """Approximate width in px of 11px Verdana (shields.io's font): narrow glyphs count less."""
    narrow = sum(c in "ilj.,:;|!' ()[]1" for c in text)
    wide = sum(c in "mwMW%@" for c in text)
    return round(6.1 * (len(text) - narrow - wide) + 3.6 * narrow + 9.0 * wide)


def badge_svg(label: str, message: str, colour: str) -> str:
    """A flat shields.io-style badge: grey label on the left, coloured message on the right."""
    lw, mw = _text_width(label) + 10, _text_width(message) + 10
    width = lw + mw
    title = escape(f"{label}: {message}")
    label_x, message_x = lw / 2, lw + mw / 2
    shadow = 'fill="#010101" fill-opacity=".3"'
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="{title}">
<title>{title}</title>
<linearGradient id="s" x2="0" y2="100%">
<stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/>
</linearGradient>
<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>
<g clip-path="url(#r)">
<rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>
<rect width="{width}" height="20" fill="url(#s)"/>
</g>
<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">
<text x="{label_x}" y="15" {shadow}>{escape(label)}</text>
<text x="{label_x}" y="14">{escape(label)}</text>
<text x="{message_x}" y="15" {shadow}>{escape(message)}</text>
<text x="{message_x}" y="14">{escape(message)}</text>
</g>
</svg>
"""


def badge_files(board: Leaderboard) -> dict[str, list[tuple[str, str]]]:
    """Implementation -> [(file name, svg)], the conformance badge first."""
    outcomes = outcomes_by_implementation(board)
    roofline = roofline_percent(board)
    untrusted = untrusted_figures(board)
    names = sorted(set(outcomes) | set(roofline) | set(untrusted))
    files: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        status = implementation_status(outcomes.get(name, []))
        entries = [(f"{slug(name)}.svg", badge_svg(LABEL, status.short, COLOURS[status.key]))]
        pct = roofline.get(name)
        if pct is not None and math.isfinite(pct):
            entries.append((f"{slug(name)}-roofline.svg", badge_svg(LABEL, f"{pct:.0f} % roofline",
                                                                    COLOURS["roofline"])))
        elif untrusted.get(name):
            # every figure it has is untrusted (normbench.bench.trust): the badge says so instead of a number
            entries.append((f"{slug(name)}-roofline.svg", badge_svg(LABEL, "untrusted benchmark",
                                                                    COLOURS[NOT_CONFORMING])))
        files[name] = entries
    return files


class BadgePublisher:
    name = "badges"
    outputs = ("site/badges/*.svg",)
    default = True

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        folder = out_dir / SITE_DIR / BADGES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        # the folder is this publisher's alone: a badge of an implementation no longer recorded must not linger
        for stale in folder.glob("*.svg"):
            stale.unlink()
        written = []
        for entries in badge_files(board).values():
            for file_name, svg in entries:
                path = folder / file_name
                path.write_text(svg, encoding="utf-8")
                written.append(path)
        return written
