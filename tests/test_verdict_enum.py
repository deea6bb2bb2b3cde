"""normbench.verdicts.Verdict: the item verdicts as a StrEnum whose values are the strings records store, so an
outcome holding a member is written byte for byte as one holding the string, and a stored verdict read back is
equal to its member."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import pytest

from normbench.outcome import ItemKey, Outcome
from normbench.run_accounting import complete_outcomes
from normbench.store.records import conformance_record, dumps
from normbench.store.validate import load_record
from normbench.store.write import store_conformance
from normbench.verdicts import ITEM_WORDS, Counts, Verdict, group

STORED = {"pass", "fail", "xfail", "report", "skip", "error", "unjudged"}


def _outcome(verdict: Any) -> dict[str, Any]:
    return {"test_id": "layernorm[X-p-float32]", "implementation": "X", "variant": "eager", "verdict": verdict,
            "summary": "", "recorded_utc": "2026-03-01T00:00:00+00:00"}


def test_the_values_are_the_stored_strings_each_in_one_group() -> None:
    assert {v.value for v in Verdict} == STORED
    assert all(str(v) == v.value == v and f"{v}" == v.value for v in Verdict)
    assert {group(v) for v in Verdict} == {"judged", "skipped", "errors", "unjudged"}
    assert set(ITEM_WORDS) == set(Verdict)


def test_an_outcome_with_a_member_is_written_as_one_with_the_string(tmp_path: Path) -> None:
    members = conformance_record([_outcome(Verdict.XFAIL)], "ci")
    strings = {**members, "outcomes": {k: {**o, "verdict": "xfail"} for k, o in members["outcomes"].items()}}
    assert dumps(members) == dumps(strings)
    assert json.dumps(members, sort_keys=True) == json.dumps(strings, sort_keys=True)
    a = store_conformance(tmp_path / "a", members)
    b = store_conformance(tmp_path / "b", strings)
    assert a.read_bytes() == b.read_bytes()
    # read back, the stored string is the member
    stored = next(iter(load_record(a)["outcomes"].values()))["verdict"]
    assert type(stored) is str and stored == Verdict.XFAIL and stored in (Verdict.XFAIL,)


def test_a_plain_enum_would_not_be_written_as_the_string() -> None:
    # the control: the byte-for-byte check above fails for an Enum that is not a str (json falls back to str(),
    # "PlainVerdict.XFAIL"), so it is the StrEnum that keeps records unchanged
    plain = enum.Enum("PlainVerdict", {"XFAIL": "xfail"})
    assert dumps({"verdict": plain.XFAIL}) != dumps({"verdict": "xfail"})
    assert dumps({"verdict": Verdict.XFAIL}) == dumps({"verdict": "xfail"})


def test_counts_treat_members_and_stored_strings_alike() -> None:
    mixed = [_outcome(Verdict.FAIL), _outcome("fail"), _outcome(Verdict.XFAIL), _outcome("skip")]
    c = Counts.of(mixed)
    assert (c.planned, c.judged, c.failed, c.known, c.skipped) == (4, 3, 2, 1, 1)


def test_the_accounting_produces_members() -> None:
    produced: list[Any] = []

    def unjudged(test_id: str, verdict: Verdict, summary: str) -> Outcome:
        produced.append(verdict)
        return Outcome(test_id=test_id, verdict=verdict, summary=summary, key=ItemKey("f", "X", test_id, "any", "x"))

    passed = Outcome("a", Verdict.PASS, "", key=ItemKey("f", "X", "a", "any", "x"))
    complete_outcomes({"a": passed}, expected=["a", "b"],
                      planned=[("a", "X"), ("b", "X"), ("c", "X")], crashed=[], interrupted=False,
                      unjudged=unjudged)
    assert produced == [Verdict.ERROR, Verdict.UNJUDGED] and all(type(v) is Verdict for v in produced)


def test_what_an_xdist_worker_sends_holds_plain_strings_only():
    # execnet (xdist's wire) serializes builtin types only: a Verdict member in a report attribute ended the worker
    import execnet

    from normbench.verdicts import plain

    outcome = {"verdict": Verdict.FAIL, "metrics": {"seen": [Verdict.PASS, ("x", Verdict.ERROR)]}}
    with pytest.raises(execnet.DataFormatError):
        execnet.dumps(outcome)
    sent = execnet.loads(execnet.dumps(plain(outcome)))
    assert sent == {"verdict": "fail", "metrics": {"seen": ["pass", ("x", "error")]}}
    assert type(sent["verdict"]) is str
