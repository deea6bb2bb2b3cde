"""Badges: one shields.io-style SVG per implementation (conforms / N failing / not judged, % roofline)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from factories.records import outcome, records

from normbench.board.build import build_leaderboard
from normbench.board.model import Leaderboard
from normbench.publish import publish_all
from normbench.publish.badges import COLOURS, badge_files, badge_svg, implementation_status, slug

SVG = "{http://www.w3.org/2000/svg}"


def texts_and_colour(svg: str) -> tuple[list[str], str]:
    root = ET.fromstring(svg)  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    message_fill = [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("x")][0]
    return texts, message_fill


def test_conformance_and_roofline_badges():
    board = build_leaderboard(records("m1"))
    files = badge_files(board)
    assert set(files) == {"torch.nn.LayerNorm", "fast.broken", "slow.correct", "unjudged.fast"}
    texts, colour = texts_and_colour(files["torch.nn.LayerNorm"][0][1])
    assert texts == ["normbench", "normbench", "conforms", "conforms"] and colour == COLOURS["conforms"] == "#4c1"
    texts, colour = texts_and_colour(files["fast.broken"][0][1])
    assert "1 failing" in texts and colour == COLOURS["failing"]
    # benchmarked but never judged: grey, never "conforms"
    texts, colour = texts_and_colour(files["unjudged.fast"][0][1])
    assert "not judged" in texts and colour == COLOURS["unjudged"]
    # % roofline from the ranking's geometric mean (the synthetic cases sit at 40 %)
    name, svg = files["torch.nn.LayerNorm"][1]
    assert name == "torch.nn.LayerNorm-roofline.svg"
    texts, colour = texts_and_colour(svg)
    assert "40 % roofline" in texts and colour == COLOURS["roofline"]


def test_unjudged_items_and_known_failures_count():
    planned = outcome("a", "forward_equivalence", "pass")
    assert implementation_status([planned]).short == "conforms"
    assert implementation_status([planned, outcome("a", "shift_invariance", "unjudged")]).short == "not judged"
    # an error is failing; the known failure beside it is said as known, never counted as failing
    status = implementation_status([planned, outcome("a", "x", "xfail"), outcome("a", "y", "error")])
    assert status.short == "1 failing" and status.text == "does not conform (1 failing, 1 known failure)"
    assert implementation_status([outcome("a", "x", "skip")]).key == "unjudged"  # nothing judged at all
    board = Leaderboard([], [], [], outcomes={"m": [planned, outcome("a", "shift_invariance", "unjudged")]})
    ((file_name, svg),) = badge_files(board)["a"]
    assert file_name == "a.svg" and texts_and_colour(svg) == (["normbench"] * 2 + ["not judged"] * 2, "#9f9f9f")


def test_known_failures_only_is_its_own_badge():
    known = [outcome("a", "forward_equivalence", "pass"), outcome("a", "x", "xfail"), outcome("a", "y", "xfail")]
    board = Leaderboard([], [], [], outcomes={"m": known})
    ((_, svg),) = badge_files(board)["a"]
    texts, colour = texts_and_colour(svg)
    assert "conforms, 2 known failures" in texts and colour == COLOURS["known"] != COLOURS["failing"]


def test_text_is_escaped_and_width_grows():
    svg = badge_svg("normbench", "<&> 12 failing", "#e05d44")
    texts, _ = texts_and_colour(svg)
    assert "<&> 12 failing" in texts
    narrow = int(ET.fromstring(badge_svg("normbench", "ok", "#4c1")).get("width"))
    assert int(ET.fromstring(svg).get("width")) > narrow


def test_slugs_are_safe_and_distinct():
    assert slug("torch.nn.LayerNorm") == "torch.nn.LayerNorm"
    odd = [slug("a b"), slug("a_b"), slug("a/b"), slug("../x")]
    assert len(set(odd)) == 4 and all("/" not in s and " " not in s and not s.startswith(".") for s in odd)


def test_badges_are_written_beside_the_site_and_stale_ones_removed(tmp_path):
    stale = tmp_path / "site" / "badges" / "gone.svg"
    stale.parent.mkdir(parents=True)
    stale.write_text("<svg/>")
    written = publish_all(build_leaderboard(records("m1")), tmp_path, ["badges"])
    names = sorted(p.name for p in written)
    assert "fast.broken.svg" in names and "unjudged.fast-roofline.svg" in names and not stale.exists()
    for path in written:
        ET.parse(path)
