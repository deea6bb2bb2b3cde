"""The results store: schema-versioned records, atomic writes, idempotent order-independent merging, refusals."""

from __future__ import annotations

import json

import pytest

from normbench.store.errors import ResultsError
from normbench.store.merge import merge_records
from normbench.store.records import API_VERSION, benchmark_record, claims_record, conformance_record
from normbench.store.scan import record_files, scan_records
from normbench.store.validate import load_record
from normbench.store.write import store_conformance, store_record


def outcome(test_id: str, verdict: str = "pass", **extra):
    return {"test_id": test_id, "family": "layernorm", "implementation": "impl.a", "property": "p", "check": "p",
            "mode": "any", "dtype": "float32", "device": "cpu", "expect": "holds", "verdict": verdict,
            "observed": "holds", "summary": "", "metrics": {}, **extra}


def entry(case_id: str, median: float, when: str) -> dict:
    return {"id": case_id, "family": "layernorm", "implementation": "impl.a", "shape": [4, 8], "dtype": "float32",
            "pass": "forward", "device": "cpu", "median_s": median, "q1_s": median, "q3_s": median,
            "iqr_s": 0.0, "measured_utc": when}


def bench(entries, device="cpu"):
    return benchmark_record(device, entries, {"copy_gbps": 10.0}, threads=1)


def test_records_carry_version_machine_and_time():
    record = conformance_record([outcome("a[x]")], profile="ci")
    assert record["api_version"] == API_VERSION and record["kind"] == "conformance"
    assert {"cpu", "cores", "torch", "cuda", "gpu"} <= set(record["machine"])
    assert record["normbench"]["commit"] and record["created_utc"]
    assert record["outcomes"]["a[x]"]["recorded_utc"] == record["created_utc"]


def test_merging_is_idempotent_and_order_independent():
    old = bench([entry("c1", 1.0, "2026-01-01T00:00:00"), entry("c2", 2.0, "2026-01-01T00:00:00")])
    new = bench([entry("c2", 3.0, "2026-02-01T00:00:00"), entry("c3", 4.0, "2026-02-01T00:00:00")])
    ab, stats = merge_records(old, new)
    assert (stats.added, stats.replaced, stats.unchanged) == (1, 1, 0)
    assert {k: e["median_s"] for k, e in ab["results"].items()} == {"c1": 1.0, "c2": 3.0, "c3": 4.0}
    ba, _ = merge_records(new, old)
    assert json.dumps(ab, sort_keys=True) == json.dumps(ba, sort_keys=True)
    again, stats = merge_records(ab, new)
    assert again == ab and (stats.added, stats.replaced) == (0, 0)


def test_an_older_measurement_never_replaces_a_newer_one():
    newer = bench([entry("c1", 1.0, "2026-02-01T00:00:00")])
    older = bench([entry("c1", 9.0, "2026-01-01T00:00:00")])
    merged, stats = merge_records(newer, older)
    assert merged["results"]["c1"]["median_s"] == 1.0 and stats.unchanged == 1


def test_store_merges_into_one_file_per_machine_and_kind(tmp_path):
    record = bench([entry("c1", 1.0, "2026-01-01T00:00:00")])
    path, stats = store_record(tmp_path, record)
    assert path.name == "benchmark-cpu.json" and path.parent.parent.name == "raw" and stats.files
    before = path.read_text()
    _, stats = store_record(tmp_path, record)
    assert not stats.files and path.read_text() == before  # the same record again: nothing written
    store_record(tmp_path, bench([entry("c2", 2.0, "2026-01-02T00:00:00")]))
    assert set(load_record(path)["results"]) == {"c1", "c2"}
    store_record(tmp_path, claims_record([{"id": "k", "claim": "c", "measured_utc": "2026-01-01T00:00:00"}]))
    assert sorted(p.name for p in record_files(tmp_path)) == ["benchmark-cpu.json", "claims.json"]
    assert not list(path.parent.glob(".*tmp-*"))  # atomic writes leave no temporary behind


def test_store_conformance_replaces_same_ids_and_renders_nothing(tmp_path):
    store_conformance(tmp_path, conformance_record([outcome("a[x]", "fail"), outcome("b[y]", implementation="b")],
                                                   "ci"))
    path = store_conformance(tmp_path, conformance_record([outcome("a[x]", "pass")], "ci"))
    outcomes = load_record(path)["outcomes"]
    assert outcomes["a[x]"]["verdict"] == "pass" and "b[y]" in outcomes
    # the store knows nothing of publishing: the caller renders the leaderboard
    assert not (tmp_path / "LEADERBOARD.md").exists()


@pytest.mark.parametrize(("content", "message"), [
    ({"api_version": 99, "kind": "benchmark"}, "api_version 99 is not supported"),
    ({"kind": "benchmark"}, "api_version None is not supported"),
    ({"api_version": API_VERSION, "kind": "timings"}, "unknown record kind 'timings'"),
    ({"api_version": API_VERSION, "kind": "benchmark", "machine_id": "m", "created_utc": "t"}, "lacks"),
    ([1, 2], "not a normbench record"),
])
def test_unreadable_records_are_refused_never_misread(tmp_path, content, message):
    path = tmp_path / "raw" / "m" / "x.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(content))
    with pytest.raises(ResultsError, match=message):
        load_record(path)
    records, errors = scan_records(tmp_path)
    assert records == [] and len(errors) == 1 and message in str(errors[0])


def test_pytest_benchmark_json_beside_the_records_is_not_a_record(tmp_path):
    store_record(tmp_path, bench([entry("c1", 1.0, "2026-01-01T00:00:00")]))
    machine = next((tmp_path / "raw").iterdir())
    (machine / "pytest-benchmark").mkdir()
    (machine / "pytest-benchmark" / "cpu.json").write_text('{"benchmarks": []}')
    records, errors = scan_records(tmp_path)
    assert len(records) == 1 and not errors
