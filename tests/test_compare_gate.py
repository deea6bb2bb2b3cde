"""`normbench compare OLD NEW`: the CI gate fails on a slowdown outside the measured spread and on a conformance
verdict that regressed or vanished, passes on noise, and refuses bad input with exit code 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from normbench.cli.main import main
from normbench.store.records import benchmark_record, conformance_record
from normbench.store.write import store_record

CASE = "layernorm[k-1024x4096-float32-forward]"


def timing(median: float, q1: float, q3: float) -> dict:
    return {"id": CASE, "family": "layernorm", "implementation": "k", "device": "cpu", "median_s": median,
            "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1, "min_s": q1 * 0.99, "measured_utc": "2026-01-01T00:00:00"}


def item(prop: str, verdict: str) -> dict:
    return {"test_id": f"layernorm[k-{prop}-float32]", "family": "layernorm", "implementation": "k",
            "property": prop, "verdict": verdict, "summary": f"{prop} {verdict}"}


def folder(tmp_path: Path, name: str, timings: list[dict] | None = None, items: list[dict] | None = None) -> Path:
    root = tmp_path / name
    for record in ([benchmark_record("cpu", timings, None, threads=1)] if timings else []) + \
                  ([conformance_record(items, "ci")] if items is not None else []):
        record["machine_id"] = "m1"
        store_record(root, record)
    return root


def test_a_twenty_percent_slowdown_with_tight_spreads_fails(tmp_path, capsys):
    old = folder(tmp_path, "old", [timing(1.00e-3, 0.99e-3, 1.01e-3)])
    new = folder(tmp_path, "new", [timing(1.20e-3, 1.19e-3, 1.21e-3)])
    assert main(["compare", str(old), str(new), "--fail-above", "5%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "+20.0%" in out and "1 regression(s)" in out and CASE in out
    assert main(["compare", str(old), str(new), "--fail-above", "25%"]) == 0  # below the threshold


def test_medians_apart_within_their_spread_pass(tmp_path, capsys):
    # two runs of the same code on a noisy machine: the medians differ by 8%, but each lies in the other's IQR
    old = folder(tmp_path, "old", [timing(1.00e-3, 0.90e-3, 1.15e-3)])
    new = folder(tmp_path, "new", [timing(1.08e-3, 0.95e-3, 1.20e-3)])
    assert main(["compare", str(old), str(new), "--fail-above", "5%"]) == 0
    out = capsys.readouterr().out
    assert "within spread" in out and "0 regression(s)" in out and "1 of 1 medians lie within" in out


def test_a_faster_run_outside_the_spread_is_faster(tmp_path, capsys):
    old = folder(tmp_path, "old", [timing(1.00e-3, 0.99e-3, 1.01e-3)])
    new = folder(tmp_path, "new", [timing(0.50e-3, 0.49e-3, 0.51e-3)])
    assert main(["compare", str(old), str(new)]) == 0
    assert "faster" in capsys.readouterr().out


def test_a_verdict_from_pass_to_fail_fails(tmp_path, capsys):
    old = folder(tmp_path, "old", items=[item("shift", "pass"), item("scale", "xfail"), item("mean", "fail")])
    new = folder(tmp_path, "new", items=[item("shift", "fail"), item("scale", "xfail"), item("mean", "pass")])
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("layernorm[")}
    assert "REGRESSION" in rows["layernorm[k-shift-float32]"] and "shift fail" in rows["layernorm[k-shift-float32]"]
    assert "fixed" in rows["layernorm[k-mean-float32]"] and "layernorm[k-scale-float32]" not in rows
    assert "1 conformance regression(s)" in out


@pytest.mark.parametrize("now", ["error", "fail"])
def test_report_and_xfail_that_turn_into_failures_fail(tmp_path, now):
    old = folder(tmp_path, "old", items=[item("a", "report"), item("b", "xfail")])
    new = folder(tmp_path, "new", items=[item("a", now), item("b", "pass")])
    assert main(["compare", str(old), str(new)]) == 1


def test_an_item_that_disappeared_fails(tmp_path, capsys):
    old = folder(tmp_path, "old", items=[item("shift", "pass"), item("scale", "pass")])
    new = folder(tmp_path, "new", items=[item("shift", "pass")])
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "layernorm[k-scale-float32]" in out
    # a NEW folder that lost its conformance record altogether has lost every item
    bench_only = folder(tmp_path, "bench-only", [timing(1e-3, 1e-3, 1e-3)])
    with_bench = folder(tmp_path, "with-bench", [timing(1e-3, 1e-3, 1e-3)], [item("shift", "pass")])
    assert main(["compare", str(with_bench), str(bench_only)]) == 1
    assert "NEW holds no conformance outcome" in capsys.readouterr().out


def test_a_skip_is_listed_but_does_not_fail(tmp_path, capsys):
    old = folder(tmp_path, "old", items=[item("shift", "pass")])
    new = folder(tmp_path, "new", items=[item("shift", "skip")])
    assert main(["compare", str(old), str(new)]) == 0
    assert "no longer judged (skip)" in capsys.readouterr().out


def _edit(root: Path, name: str, change) -> Path:
    path = root / "raw" / "m1" / name
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("key", "value"), [
    ("median_s", 0), ("median_s", -1e-3), ("median_s", math.nan), ("median_s", math.inf), ("median_s", "1e-3"),
    ("median_s", None), ("median_s", True), ("q1_s", None), ("q3_s", "fast"), ("q1_s", 5e-3),
])
def test_bad_timings_are_bad_input(tmp_path, capsys, key, value):
    old = folder(tmp_path, "old", [timing(1e-3, 0.9e-3, 1.1e-3)])
    new = folder(tmp_path, "new", [timing(1e-3, 0.9e-3, 1.1e-3)])
    bad = _edit(new, "benchmark-cpu.json", lambda d: d["results"][CASE].__setitem__(key, value))
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err
    assert f"bad input: {bad}: case {CASE!r}" in err and "nothing was compared" in err


def test_a_missing_median_and_an_unreadable_record_are_bad_input(tmp_path, capsys):
    old = folder(tmp_path, "old", [timing(1e-3, 0.9e-3, 1.1e-3)])
    new = folder(tmp_path, "new", [timing(1e-3, 0.9e-3, 1.1e-3)])
    _edit(old, "benchmark-cpu.json", lambda d: d["results"][CASE].pop("median_s"))
    broken = new / "raw" / "m1" / "benchmark-cpu.json"
    broken.write_text("{not json")
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err
    assert "median_s is 'missing'" in err and f"{broken}: not a readable normbench record" in err
    assert main(["compare", str(old), str(tmp_path / "nowhere")]) == 2


def test_a_verdict_that_is_missing_is_bad_input(tmp_path, capsys):
    old = folder(tmp_path, "old", items=[item("shift", "pass")])
    new = folder(tmp_path, "new", items=[item("shift", "pass")])
    _edit(new, "conformance.json", lambda d: d["outcomes"]["layernorm[k-shift-float32]"].pop("verdict"))
    assert main(["compare", str(old), str(new)]) == 2
    assert "item 'layernorm[k-shift-float32]': verdict is 'missing'" in capsys.readouterr().err


def test_a_nan_threshold_is_refused(tmp_path):
    old = folder(tmp_path, "old", [timing(1e-3, 0.9e-3, 1.1e-3)])
    with pytest.raises(SystemExit) as info:
        main(["compare", str(old), str(old), "--fail-above", "nan"])
    assert info.value.code == 2
