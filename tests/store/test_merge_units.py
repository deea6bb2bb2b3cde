"""The conformance store's merge unit, (implementation, variant): a run's record replaces exactly the units it judged,
under the lock, and keeps every other unit stored; an interrupted run's record keeps, marked stale, the stored
outcome of each item it never reached. The run never reads the store to do so, so a second writer between its
judging and its write loses nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import normbench.store.records as records
from normbench.store.errors import ResultsError
from normbench.store.merge import merge_records
from normbench.store.records import RUN_KEY, conformance_record, dumps
from normbench.store.validate import load_record, validate_record
from normbench.store.write import store_conformance
from normbench.verdicts import Counts

LN, RMS = "torch.nn.LayerNorm", "normbench.RMSNorm"


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each record is a second newer than the one before (no test depends on the wall clock)."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(records, "utc_now", lambda: f"2026-03-01T00:00:{next(ticks):02d}.000000+00:00")
    yield


def outcome(prop: str, verdict: str = "pass", impl: str = LN, variant: str | None = "eager") -> dict[str, Any]:
    suffix = "" if variant in (None, "eager") else f"-{variant}"
    found = {"test_id": f"layernorm[{impl}-{prop}-float32{suffix}]", "family": "layernorm", "implementation": impl,
             "property": prop, "check": prop, "mode": "any", "dtype": "float32", "device": "cpu",
             "expect": "holds", "verdict": verdict, "observed": "holds", "summary": "", "metrics": {}}
    if variant is not None:
        found["variant"] = variant
    return found


def summaries(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per implementation, as the pytest plugin counts a run's own outcomes."""
    out = {}
    for name in sorted({o["implementation"] for o in outcomes}):
        c = Counts.of(o for o in outcomes if o["implementation"] == name)
        out[name] = {"family": "layernorm", "source": "builtin", "planned": c.planned, "judged": c.judged,
                     "skipped": c.skipped, "errors": c.errors, "unjudged": c.unjudged, "failed": c.failed,
                     "known": c.known, "profile": "ci"}
    return out


def run_record(outcomes: list[dict[str, Any]], variants: tuple[str, ...] = ("eager",),
               not_reached: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run's record, as the plugin makes it: its units are every implementation it judged in every variant."""
    units = {(o["implementation"], v) for o in outcomes for v in variants}
    return conformance_record(outcomes, "ci", summaries(outcomes), units=units, not_reached=not_reached)


def snapshot_record(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """A record without a run section (a stored file): it replaces whole implementations."""
    return conformance_record(outcomes, "ci", summaries(outcomes))


def stored(folder: Path) -> dict[str, Any]:
    return load_record(next((folder / "raw").glob("*/conformance.json")))


def test_two_variants_written_by_two_runs_are_both_kept(tmp_path: Path) -> None:
    eager = [outcome("p1"), outcome("p2", "fail"), outcome("p1", impl=RMS)]
    store_conformance(tmp_path, run_record(eager))
    after_eager = stored(tmp_path)
    compiled = [outcome("p1", variant="compile"), outcome("p2", variant="compile")]
    store_conformance(tmp_path, run_record(compiled, variants=("compile",)))
    record = stored(tmp_path)
    assert sorted(record["outcomes"]) == sorted(o["test_id"] for o in eager + compiled)
    # the eager unit is as the first run stored it, byte for byte
    for o in eager:
        assert record["outcomes"][o["test_id"]] == after_eager["outcomes"][o["test_id"]]
    # LayerNorm's entry is the compile run's, counted over both of its units, as a carrying-over run counted it
    entry = record["implementations"][LN]
    assert (entry["planned"], entry["judged"], entry["failed"]) == (4, 4, 1)
    assert entry["recorded_utc"] == record["created_utc"] != after_eager["created_utc"]
    assert record["implementations"][RMS] == after_eager["implementations"][RMS]
    assert RUN_KEY not in record  # what the write replaced is never stored


def test_a_record_without_units_still_replaces_the_whole_implementation(tmp_path: Path) -> None:
    # the control: the same compile outcomes as a snapshot (the merge per implementation) drop the eager unit, so the
    # test above shows the unit, not an accident of the data
    store_conformance(tmp_path, run_record([outcome("p1"), outcome("p2")]))
    store_conformance(tmp_path, snapshot_record([outcome("p1", variant="compile")]))
    assert sorted(stored(tmp_path)["outcomes"]) == ["layernorm[torch.nn.LayerNorm-p1-float32-compile]"]


def test_a_run_replaces_its_unit_whole(tmp_path: Path) -> None:
    # an item the new run of a unit did not produce again is dropped: no pass survives unconfirmed
    store_conformance(tmp_path, run_record([outcome("p1"), outcome("gone")]))
    store_conformance(tmp_path, run_record([outcome("p1", "fail")]))
    record = stored(tmp_path)
    assert list(record["outcomes"]) == ["layernorm[torch.nn.LayerNorm-p1-float32]"]
    assert record["outcomes"]["layernorm[torch.nn.LayerNorm-p1-float32]"]["verdict"] == "fail"
    assert record["implementations"][LN]["planned"] == 1


def test_an_outcome_stored_without_a_variant_is_of_the_default_one(tmp_path: Path) -> None:
    # records from before deployments carry no variant: an eager run replaces them, a compile run keeps them
    store_conformance(tmp_path, snapshot_record([outcome("old", variant=None)]))
    store_conformance(tmp_path, run_record([outcome("p1", variant="compile")], variants=("compile",)))
    assert "layernorm[torch.nn.LayerNorm-old-float32]" in stored(tmp_path)["outcomes"]
    store_conformance(tmp_path, run_record([outcome("p1")]))
    assert "layernorm[torch.nn.LayerNorm-old-float32]" not in stored(tmp_path)["outcomes"]


def test_an_interrupted_run_keeps_what_it_never_reached_marked_stale(tmp_path: Path) -> None:
    first = [outcome("p1"), outcome("p2"), outcome("p1", impl=RMS)]
    store_conformance(tmp_path, run_record(first))
    before = stored(tmp_path)["outcomes"]
    p1, p2, p3 = (f"layernorm[{LN}-{p}-float32]" for p in ("p1", "p2", "p3"))
    rms = f"layernorm[{RMS}-p1-float32]"
    interrupted = [outcome("p1", "fail"), outcome("p2", "error"), outcome("p3", "error"),
                   outcome("p1", "error", impl=RMS)]
    # RMS's item was reached (and errored); p2 and p3 were not; p3 has nothing stored
    store_conformance(tmp_path, run_record(interrupted, not_reached=(p2, p3)))
    record = stored(tmp_path)
    kept = record["outcomes"][p2]
    assert kept["verdict"] == "pass" and kept["recorded_utc"] == before[p2]["recorded_utc"]
    assert kept["stale"] == (f"kept from the run of {before[p2]['recorded_utc']}: the run after it was interrupted "
                             "before this item")
    assert {k: v for k, v in kept.items() if k != "stale"} == before[p2]
    assert record["outcomes"][p3]["verdict"] == "error" and "stale" not in record["outcomes"][p3]
    assert record["outcomes"][p1]["verdict"] == "fail" and record["outcomes"][rms]["verdict"] == "error"
    # the kept pass is counted with the run's outcomes: 3 items, one error
    entry = record["implementations"][LN]
    assert (entry["planned"], entry["judged"], entry["errors"]) == (3, 2, 1)


def test_a_not_reached_item_of_another_implementation_is_not_kept(tmp_path: Path) -> None:
    # a stored outcome under the same test id but of another implementation is no earlier verdict of this item
    store_conformance(tmp_path, snapshot_record([{**outcome("p1", impl=RMS),
                                                  "test_id": f"layernorm[{LN}-p1-float32]"}]))
    tid = f"layernorm[{LN}-p1-float32]"
    store_conformance(tmp_path, run_record([outcome("p1", "error")], not_reached=(tid,)))
    assert stored(tmp_path)["outcomes"][tid]["implementation"] == LN
    assert "stale" not in stored(tmp_path)["outcomes"][tid]


def test_a_writer_between_a_run_and_its_write_loses_nothing(tmp_path: Path) -> None:
    # Two runs judge from the same store: the compile run stores first, then the eager run. Each replaces only its
    # unit under the lock, so both survive whatever the order.
    store_conformance(tmp_path, run_record([outcome("p1"), outcome("p1", variant="compile")],
                                           variants=("eager", "compile")))
    eager = run_record([outcome("p1", "fail")])
    compiled = run_record([outcome("p1", "fail", variant="compile")], variants=("compile",))
    store_conformance(tmp_path, compiled)
    store_conformance(tmp_path, eager)
    record = stored(tmp_path)
    assert {k: o["verdict"] for k, o in record["outcomes"].items()} == {
        f"layernorm[{LN}-p1-float32]": "fail", f"layernorm[{LN}-p1-float32-compile]": "fail"}
    assert record["implementations"][LN]["failed"] == 2


def test_the_read_before_write_design_lost_the_other_writer(tmp_path: Path) -> None:
    # the control: the same two runs as records that carried over what they read before judging (snapshots) lose
    # the compile run's verdict, which the test above shows the unit merge keeps
    start = [outcome("p1"), outcome("p1", variant="compile")]
    store_conformance(tmp_path, run_record(start, variants=("eager", "compile")))
    read = stored(tmp_path)["outcomes"]
    compiled = snapshot_record([read[f"layernorm[{LN}-p1-float32]"], outcome("p1", "fail", variant="compile")])
    eager = snapshot_record([outcome("p1", "fail"), read[f"layernorm[{LN}-p1-float32-compile]"]])
    store_conformance(tmp_path, compiled)
    store_conformance(tmp_path, eager)
    assert stored(tmp_path)["outcomes"][f"layernorm[{LN}-p1-float32-compile]"]["verdict"] == "pass"


def test_a_unit_stored_by_a_newer_run_is_not_replaced_by_an_older_one(tmp_path: Path) -> None:
    older = run_record([outcome("p1", "fail")])  # judged first, stored last
    newer = run_record([outcome("p1")])
    store_conformance(tmp_path, newer)
    store_conformance(tmp_path, older)
    record = stored(tmp_path)
    assert record["outcomes"][f"layernorm[{LN}-p1-float32]"]["verdict"] == "pass"
    assert record["implementations"][LN]["recorded_utc"] == newer["created_utc"]


def test_storing_a_run_into_nothing_writes_what_a_snapshot_of_it_writes(tmp_path: Path) -> None:
    # byte compatibility: the stored file of a run's record is the old record format exactly (no run section)
    outcomes = [outcome("p1"), outcome("p2", "fail")]
    run = run_record(outcomes, not_reached=(f"layernorm[{LN}-p2-float32]",))
    snapshot = {k: v for k, v in run.items() if k != RUN_KEY}
    a = store_conformance(tmp_path / "a", run)
    b = store_conformance(tmp_path / "b", snapshot)
    assert a.read_text() == b.read_text() == dumps(load_record(b))
    assert RUN_KEY not in json.loads(a.read_text())


def test_storing_the_same_run_again_changes_nothing(tmp_path: Path) -> None:
    store_conformance(tmp_path, run_record([outcome("p1"), outcome("p2")]))
    run = run_record([outcome("p1", "fail"), outcome("p2", "error")], not_reached=(f"layernorm[{LN}-p2-float32]",))
    path = store_conformance(tmp_path, run)
    once = path.read_text()
    store_conformance(tmp_path, run)
    assert path.read_text() == once


def test_snapshots_merge_per_implementation_as_before() -> None:
    # normbench merge of stored files: the newer snapshot of an implementation replaces it whole, in either order
    old = snapshot_record([outcome("p1"), outcome("p1", variant="compile"), outcome("p1", impl=RMS)])
    new = snapshot_record([outcome("p1", "fail")])
    ab, _ = merge_records(old, new)
    ba, _ = merge_records(new, old)
    assert ab == ba
    assert sorted(ab["outcomes"]) == [f"layernorm[{RMS}-p1-float32]", f"layernorm[{LN}-p1-float32]"]


@pytest.mark.parametrize(("run", "message"), [
    ([["x", "eager"]], "`run` must be an object"),
    ({"units": [["x"]], "not_reached": []}, r"run.units must be a list of \[implementation, variant\]"),
    ({"units": [], "not_reached": "x"}, "run.not_reached must be a list of test ids"),
    ({"units": [], "not_reached": [], "extra": 1}, "exactly `units` and `not_reached`"),
    ({"units": [["other", "eager"]], "not_reached": []}, r"belong to no unit of run.units"),
])
def test_a_bad_run_section_is_refused_naming_the_key(run: Any, message: str) -> None:
    record = run_record([outcome("p1")])
    record[RUN_KEY] = run
    with pytest.raises(ResultsError, match=message):
        validate_record(record, "record to store")
    validate_record(run_record([outcome("p1")]), "record to store")  # the record the plugin makes passes
