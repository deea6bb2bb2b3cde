"""normbench.outcome: an item's key and its outcome, and their records, which are the fixed format of results/."""

from __future__ import annotations

import json
from pathlib import Path

import execnet
import pytest

from normbench.outcome import ItemKey, Outcome, OutcomeError
from normbench.verdicts import Verdict

ROOT = Path(__file__).resolve().parent.parent
STORED = sorted((ROOT / "results" / "raw").glob("*/conformance.json"))
KEY = ItemKey("layernorm", "torch.nn.LayerNorm", "shift_invariance", "any", "float32")


def _judged(verdict: Verdict) -> Outcome:
    return Outcome(test_id=KEY.test_id, key=KEY, check="shift_invariance", expect="holds", verdict=verdict,
                   observed="holds", summary="measured", metrics={"max_abs": 1e-7}, counterexample={"shape": [2, 3]},
                   duration_s=0.25, ulp="at the output's scale", extra={"source": "torch", "captured_output": "hi"})


def test_item_ids_are_the_design_notes_ids() -> None:
    assert KEY.test_id == "layernorm[torch.nn.LayerNorm-shift_invariance-float32]"
    compiled = ItemKey("batchnorm", "torch.nn.BatchNorm1d", "batch_independence", "train", "bfloat16", "cuda",
                       "compile")
    assert compiled.test_id == "batchnorm[torch.nn.BatchNorm1d-batch_independence-train-bfloat16-cuda-compile]"
    assert ItemKey("layernorm", "x", "p", "eval", "float64", variant="eager").test_id == "layernorm[x-p-eval-float64]"
    assert KEY.unit == ("torch.nn.LayerNorm", "eager")


@pytest.mark.parametrize("verdict", list(Verdict))
def test_every_verdict_round_trips_through_its_record(verdict: Verdict) -> None:
    outcome = _judged(verdict)
    record = outcome.to_record()
    assert type(record["verdict"]) is str and record["verdict"] == verdict.value
    assert json.loads(json.dumps(record)) == record  # plain data only
    back = Outcome.from_record(json.loads(json.dumps(record)))
    assert back == outcome and back.verdict is verdict and back.to_record() == record
    assert set(record) == {"test_id", "family", "implementation", "property", "mode", "dtype", "device", "variant",
                           "check", "expect", "verdict", "observed", "summary", "metrics", "counterexample",
                           "duration_s", "ulp", "source", "captured_output"}


def test_an_outcome_that_names_no_planned_item_records_its_id_verdict_and_summary_only() -> None:
    outcome = Outcome.unplanned("spec_error[specs/bad.yaml]", Verdict.ERROR, "bad key 'x'")
    assert outcome.to_record() == {"test_id": "spec_error[specs/bad.yaml]", "verdict": "error",
                                   "summary": "bad key 'x'"}
    assert Outcome.from_record(outcome.to_record()) == outcome and outcome.key is None


@pytest.mark.skipif(not STORED, reason="no stored conformance record in results/raw")
@pytest.mark.parametrize("path", STORED, ids=lambda p: p.parent.name)
def test_every_stored_record_reads_and_writes_back_the_same(path: Path) -> None:
    outcomes = json.loads(path.read_text())["outcomes"]
    assert outcomes
    for test_id, record in outcomes.items():
        back = Outcome.from_record(record).to_record()
        assert back == record, test_id
        assert json.dumps(back, sort_keys=True) == json.dumps(record, sort_keys=True), test_id


def test_an_older_record_without_a_variant_or_ulp_is_written_back_without_them() -> None:
    record = {k: v for k, v in _judged(Verdict.PASS).to_record().items() if k not in ("variant", "ulp")}
    outcome = Outcome.from_record(record)
    assert outcome.key == KEY  # of the default variant
    assert outcome.to_record() == record


def test_an_outcome_is_read_by_its_attributes_and_its_record_by_key() -> None:
    outcome = _judged(Verdict.FAIL)
    # broken: a dict-style read of an outcome, which would read a record field by another name, is refused
    with pytest.raises(TypeError):
        outcome["verdict"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        outcome.get("verdict")  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        dict(outcome)  # type: ignore[call-overload]
    # correct: the attributes, and the record where a record is wanted
    assert outcome.verdict is Verdict.FAIL and outcome.key == KEY and outcome.extra["source"] == "torch"
    record = outcome.to_record()
    assert record["verdict"] == "fail" and record["implementation"] == "torch.nn.LayerNorm"
    assert record.get("inherited_from") is None and record["source"] == "torch"
    assert "metrics" not in Outcome.unplanned("plugin_error[x]", Verdict.ERROR, "boom").to_record()


@pytest.mark.parametrize(("record", "words"), [
    ({"verdict": "pass", "summary": ""}, "without a test_id"),
    ({"test_id": "a[b-c-float32]", "verdict": "passed", "summary": ""}, "'a[b-c-float32]': unknown verdict 'passed'"),
    ({"test_id": "a[b-c-float32]", "summary": ""}, "'a[b-c-float32]': the record has no 'verdict'"),
    ({"test_id": "a[b-c-float32]", "verdict": "pass", "summary": "", "implementation": "b", "family": "a",
      "property": "c", "mode": "any"}, "'a[b-c-float32]': the record names an implementation but has no ['dtype']"),
])
def test_a_record_that_is_no_outcome_is_refused_naming_the_item_and_the_field(record: dict, words: str) -> None:
    with pytest.raises(OutcomeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        Outcome.from_record(record)


def test_xdist_carries_the_record_not_the_outcome() -> None:
    """execnet, which carries an xdist worker's report to the controller, takes builtin types only."""
    outcome = _judged(Verdict.XFAIL)
    with pytest.raises(execnet.DataFormatError):
        execnet.dumps(outcome)
    with pytest.raises(execnet.DataFormatError):
        execnet.dumps({"verdict": Verdict.XFAIL})  # a str subclass too
    assert Outcome.from_record(execnet.loads(execnet.dumps(outcome.to_record()))) == outcome
