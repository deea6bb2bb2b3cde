"""Every publisher escapes or encodes implementation names: a name is plugin data, and the
leaderboard, the site, the badges and the plots must show it as text, never as structure."""

from __future__ import annotations

import hashlib
import html
import re

import pytest
from factories.records import case, outcome

from normbench.board.build import build_leaderboard
from normbench.publish import publish_all
from normbench.publish._format import cell
from normbench.publish.badges import badge_files, slug
from normbench.publish.plots import MAX_LABEL, plain
from normbench.store.records import benchmark_record, conformance_record

PIPE = "evil | conforms"
SCRIPT = "<script>alert(1)</script>"
LONG = "x" * 5000
HOSTILE = [PIPE, SCRIPT, LONG, "back\\slash|", "_hidden", "dollar$\\frac$"]


def board_of(names: list[str], failing: int = 25):
    outcomes = [outcome(name, f"p{i}", "fail") for name in names for i in range(failing)]
    outcomes.append(outcome("ok.impl", "p0", "pass"))
    bench = benchmark_record("cpu", [case(name, 1e-3, 50.0) for name in [*names, "ok.impl"]],
                             {"copy_gbps": 10.0, "copy_bytes": 2**28}, threads=2)
    return build_leaderboard([conformance_record(outcomes, profile="ci"), bench])


def markdown_cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [html.unescape(c.strip()) for c in line[1:-1].split("|")]


def test_a_pipe_in_a_name_cannot_shift_markdown_cells(tmp_path):
    board = board_of([PIPE, "back\\slash|"])
    publish_all(board, tmp_path, ["md"])
    lines = (tmp_path / "LEADERBOARD.md").read_text(encoding="utf-8").splitlines()
    for table in (t for t in board.tables if t.rows):
        header = next(i for i, line in enumerate(lines) if line.startswith("|") and
                      markdown_cells(line) == [str(h) for h in table.headers])
        rows = lines[header + 2:header + 2 + len(table.rows)]
        # every row splits into exactly its cells, with exactly their text
        assert [markdown_cells(r) for r in rows] == [[cell(v) for v in row] for row in table.rows], table.name
    verdict = {r[1]: r[2] for r in board.table("conformance").rows}[PIPE]
    assert "25" in verdict and not verdict.startswith("conforms")
    (line,) = [line for line in lines if line.startswith("| layernorm ") and "evil &#124; conforms" in line
               and len(markdown_cells(line)) == 3]  # the conformance table's row: family, implementation, verdict
    assert markdown_cells(line) == ["layernorm", PIPE, verdict]


def test_html_pages_and_the_site_escape_names(tmp_path):
    publish_all(board_of([SCRIPT, PIPE]), tmp_path, ["html", "md", "site", "badges"])
    pages = [tmp_path / "LEADERBOARD.html", tmp_path / "LEADERBOARD.md", *(tmp_path / "site").glob("*.html"),
             *(tmp_path / "site" / "badges").glob("*.svg")]
    assert len(pages) > 4
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text, page.name
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index


def test_a_5000_character_name_gets_a_short_file_name_and_later_runs_still_publish(tmp_path):
    board = board_of([LONG, SCRIPT])
    for _ in range(2):  # the second run into the same folder must work too
        written = publish_all(board, tmp_path, ["badges", "site", "md", "html", "csv"])
        assert written and all(len(p.name.encode()) <= 100 for p in written)
    assert len(slug(LONG)) <= 64 + 13


def test_names_that_clean_alike_get_different_files():
    forged = f"a_b-{hashlib.sha256(b'a/b').hexdigest()[:12]}"  # spelled like the hashed slug of "a/b"
    names = ["a/b", "a:b", "a b", "a_b", "a_b.", forged, "x", "x-roofline", "../x", LONG, LONG + "y", SCRIPT]
    stems = [slug(n) for n in names]
    assert len(set(stems)) == len(names), stems
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) and len(s) <= 77 for s in stems), stems
    assert slug("torch.nn.LayerNorm") == "torch.nn.LayerNorm"  # safe names keep their badge URL
    board = board_of(names, failing=1)
    files = [f for entries in badge_files(board).values() for f, _ in entries]
    assert len(files) == len(set(files)) == 2 * (len(names) + 1)  # conformance + roofline badge each


@pytest.mark.parametrize("name", HOSTILE)
def test_plot_labels_are_literal_text(name):
    label = plain(name)
    assert "$" not in label.replace(r"\$", "") and not label.startswith("_") and len(label) <= MAX_LABEL


def test_the_png_publisher_draws_hostile_names(tmp_path):
    written = publish_all(board_of(HOSTILE, failing=1), tmp_path, ["png"])
    assert written and all(p.stat().st_size > 0 for p in written)
