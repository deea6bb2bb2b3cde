"""One truth, said plainly everywhere: one verdict vocabulary and one item count in the terminal,
LEADERBOARD.md, the site, the badges and the ranking; failure summaries lead with the measured deviation; plurals."""

from __future__ import annotations

import re

import torch
from factories.records import case, outcome
from helpers import impl, run

from normbench.board.build import build_leaderboard
from normbench.publish import publish_all
from normbench.publish.badges import badge_files
from normbench.publish.terminal import summary_lines, totals_line
from normbench.runner import failure_summary
from normbench.store.records import benchmark_record, conformance_record
from normbench.verdicts import Counts, did_you_mean, plural, status_of


def test_plural():
    assert [plural(n, "item") for n in (0, 1, 2)] == ["0 items", "1 item", "2 items"]
    assert plural(1, "known failure") == "1 known failure" and plural(3, "entry", "entries") == "3 entries"


def test_one_definition_of_the_item_count():
    items = [outcome("a", f"p{i}", "pass") for i in range(41)]
    items += [outcome("a", "x", "xfail"), outcome("a", "y", "xfail")]
    items += [outcome("a", f"s{i}", "skip") for i in range(3)]
    c = Counts.of(items)
    assert (c.planned, c.judged, c.skipped, c.known, c.failing) == (46, 43, 3, 2, 0)
    assert c.describe() == "46 items: 43 judged, 3 skipped"
    assert Counts.of([outcome("a", "p", "error"), outcome("a", "q", "unjudged")]).describe() == \
        "2 items: 0 judged, 1 error (no verdict), 1 not judged"


def test_the_status_order_is_fail_closed():
    ok, known, bad = outcome("a", "p", "pass"), outcome("a", "k", "xfail"), outcome("a", "f", "fail")
    assert status_of([ok]).text == "conforms"
    assert status_of([ok, known]).text == "conforms with 1 known failure" and status_of([ok, known]).conforming
    assert status_of([ok, known, bad]).text == "does not conform (1 failing, 1 known failure)"
    assert status_of([ok, outcome("a", "u", "unjudged")]).text == "not judged (1 of 2 items)"
    assert status_of([outcome("a", "s", "skip")]).text == "not judged (the item skipped)"
    assert status_of([]).text == "not judged" and not status_of([]).conforming


def _records() -> list[dict]:
    """torch.nn.LayerNorm with only its two declared known failures, fast; a fully conforming LayerNorm 8x slower."""
    outcomes = [outcome("torch.nn.LayerNorm", f"p{i}", "pass") for i in range(41)]
    outcomes += [outcome("torch.nn.LayerNorm", "weight_gradient_reduction", "xfail", dtype=d)
                 for d in ("float16", "bfloat16")]
    outcomes += [outcome("torch.nn.LayerNorm", "gradcheck", "skip", dtype=d) for d in ("float16", "bfloat16", "x")]
    outcomes += [outcome("slow.LayerNorm", "forward_equivalence", "pass")]
    bench = benchmark_record("cpu", [case("torch.nn.LayerNorm", 1e-3, 80.0), case("slow.LayerNorm", 8e-3, 10.0)],
                             {"copy_gbps": 10.0, "copy_bytes": 2**28}, threads=2)
    return [conformance_record(outcomes, profile="ci"), bench]


def test_known_failures_are_said_as_known_failures_everywhere_and_rank_with_the_conforming(tmp_path):
    records = _records()
    said = "conforms with 2 known failures"
    counts = "46 items: 43 judged, 3 skipped"
    terminal = "\n".join(summary_lines(records[0]["outcomes"].values(), 160))
    assert said in terminal and counts in terminal
    board = build_leaderboard(records)
    conformance = {r[1]: r[2] for r in board.table("conformance").rows}
    assert conformance["torch.nn.LayerNorm"] == f"{said} · {counts}"
    ranking = board.table("ranking")
    assert [(r[0], r[1], r[3]) for r in ranking.rows] == [(1, "torch.nn.LayerNorm", said), (2, "slow.LayerNorm",
                                                                                              "conforms")]
    assert "known failures" in ranking.notes[0] and "ranks with the" in ranking.notes[0]
    texts = re.findall(r">([^<>]+)</text>", badge_files(board)["torch.nn.LayerNorm"][0][1])
    assert "conforms, 2 known failures" in texts
    publish_all(board, tmp_path, ["md", "badges", "site"])
    assert f"{said} · {counts}" in (tmp_path / "LEADERBOARD.md").read_text()
    index = (tmp_path / "site" / "index.html").read_text()
    assert f'<span class="verdict-known">{said}</span>' in index and "1 with known failures only" in index
    torch_rows = [line for line in (tmp_path / "LEADERBOARD.md").read_text().splitlines()
                  if line.startswith("|") and "torch.nn.LayerNorm" in line]
    assert torch_rows and not any("does not conform" in r or "failing" in r for r in torch_rows)
    assert "does not conform" not in terminal and "failing" not in terminal.split("\nitems:")[0]
    for text in (terminal, (tmp_path / "LEADERBOARD.md").read_text(), index):
        assert not re.search(r"\b1 (items|known failures|implementations|conform)\b", text)


def test_the_runs_total_uses_the_same_groups():
    line = totals_line(_records()[0]["outcomes"].values())
    assert line == "2 implementations, 47 items: 44 judged, 3 skipped"
    assert totals_line([outcome("a", "p", "pass")]) == "1 implementation, 1 item: 1 judged"


def test_a_failure_leads_with_what_was_measured():
    assert failure_summary("holds", "output: max abs err 4.4") == "output: max abs err 4.4 (must hold)"
    assert failure_summary("violated", "f(x + c) == f(x) holds").startswith("holds, but the family must NOT have it")


def _affine(factory: type) -> object:
    return lambda C, **kw: factory(C, eps=kw.get("eps", 1e-5), elementwise_affine=kw.get("affine", True))


def test_judged_failures_no_longer_open_with_the_expectation():
    rms_as_ln = run(impl("mislabelled.RMSNormAsLayerNorm", "layernorm", _affine(torch.nn.RMSNorm)), "shift_invariance")
    assert rms_as_ln.verdict == "fail" and rms_as_ln.summary.startswith("f(x + c) == f(x) does not hold: shift=")
    assert rms_as_ln.summary.endswith("(must hold)") and "expected the property" not in rms_as_ln.summary
    assert (rms_as_ln.expect, rms_as_ln.observed) == ("holds", "violated")  # the structured fields keep it
    ln_as_rms = run(impl("mislabelled.LayerNormAsRMSNorm", "rmsnorm", _affine(torch.nn.LayerNorm)), "shift_invariance")
    assert ln_as_rms.verdict == "fail" and ln_as_rms.summary.startswith("holds, but the family must NOT have it: ")


def test_close_matches_for_a_mistyped_name():
    known = ["torch.nn.LayerNorm", "torch.nn.RMSNorm", "F.layer_norm", "example.TwoPassLayerNorm"]
    assert did_you_mean("torch.nn.LayerNrom", known) == " (did you mean 'torch.nn.LayerNorm'?)"
    assert "'torch.nn.RMSNorm'" in did_you_mean("torch.nn.rmsnorm", known)  # case-insensitive
    assert did_you_mean("zzz", known) == ""
    assert did_you_mean("TwoPass", known) == " (did you mean 'example.TwoPassLayerNorm'?)"  # contained in one name


def test_normbench_version(capsys):
    import pytest

    import normbench
    from normbench.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"normbench {normbench.__version__} (commit ")


def test_the_suites_run_header_names_the_normbench_version():
    from types import SimpleNamespace

    import normbench
    from normbench.pytest_plugin import pytest_report_header

    suite_run = SimpleNamespace(args=["suite"], option=SimpleNamespace(pyargs=False))
    line, user = pytest_report_header(suite_run)
    assert line.startswith(f"normbench {normbench.__version__} (commit ")
    assert user.startswith("plugin code runs ")  # who plugin code runs as (normbench.judge_user.describe)
    assert pytest_report_header(SimpleNamespace(args=["tests"], option=SimpleNamespace(pyargs=False))) == []
