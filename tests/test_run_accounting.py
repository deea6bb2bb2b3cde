"""normbench.run_accounting: every planned item of a judged implementation ends with an outcome (fail closed). What
an interrupted run or a variant run keeps of the store is the store's merge (tests/store/test_merge_units.py)."""

from __future__ import annotations

from normbench.outcome import ItemKey, Outcome
from normbench.run_accounting import (
    INTERRUPTED,
    NOT_REPORTED,
    NOT_SELECTED,
    complete_outcomes,
    worker_killers,
)
from normbench.verdicts import Verdict

PLAN = [("a[LN-p1]", "LN"), ("a[LN-p2]", "LN"), ("a[LN-p3]", "LN"), ("b[RMS-p1]", "RMS")]


def _unjudged(test_id: str, verdict: Verdict, summary: str) -> Outcome:
    name = dict(PLAN).get(test_id)
    if name is None:
        return Outcome.unplanned(test_id, verdict, summary)
    return Outcome(test_id=test_id, verdict=verdict, summary=summary,
                   key=ItemKey("a", name, test_id.split("-")[-1].rstrip("]"), "any", "float32"))


def _passed(test_id: str) -> Outcome:
    return _unjudged(test_id, Verdict.PASS, "")


def test_a_selected_item_that_never_reported_is_an_error_not_a_pass() -> None:
    done = complete_outcomes({"a[LN-p1]": _passed("a[LN-p1]")}, expected=["a[LN-p1]", "a[LN-p2]"], planned=PLAN,
                             crashed=[], interrupted=False, unjudged=_unjudged)
    assert done["a[LN-p1]"].verdict is Verdict.PASS
    assert done["a[LN-p2]"] == _unjudged("a[LN-p2]", Verdict.ERROR, f"not judged: {NOT_REPORTED}")
    # p3 was planned but not selected: not judged, never silently absent
    assert done["a[LN-p3]"] == _unjudged("a[LN-p3]", Verdict.UNJUDGED, NOT_SELECTED)
    # an implementation with no outcome at all is not made up
    assert "b[RMS-p1]" not in done


def test_an_interruption_and_a_lost_worker_say_why() -> None:
    interrupted = complete_outcomes({}, expected=["a[LN-p1]"], planned=PLAN, crashed=[], interrupted=True,
                                    unjudged=_unjudged)
    assert interrupted["a[LN-p1]"].summary == f"not judged: {INTERRUPTED}"
    lost = complete_outcomes({"a[LN-p1]": _passed("a[LN-p1]")}, expected=["a[LN-p1]", "a[LN-p2]", "a[LN-p3]"],
                             planned=PLAN, crashed=["a[LN-p3]", "a[LN-p2]"], interrupted=False, unjudged=_unjudged)
    # the first (sorted) item the worker was on is named as what ended it
    assert "(a[LN-p2]) ended the xdist worker" in lost["a[LN-p3]"].summary
    assert lost["a[LN-p3]"].verdict is Verdict.ERROR


def test_worker_killers_ignore_ids_outside_the_plan() -> None:
    assert worker_killers(["zzz", "a[LN-p3]", "a[LN-p2]"], dict(PLAN)) == {"LN": "a[LN-p2]"}
    assert worker_killers([], dict(PLAN)) == {}


def test_a_known_failure_applies_only_to_the_variant_its_id_names() -> None:
    from normbench.stale_known_failures import known_entry_applies

    variants = ("eager", "compile", "export")
    eager_entry = "layernorm[X-forward_equivalence-bfloat16]"
    compile_entry = "layernorm[X-forward_equivalence-bfloat16-compile]"
    assert known_entry_applies(eager_entry, "eager", "eager", variants)
    assert not known_entry_applies(eager_entry, "compile", "eager", variants)
    assert known_entry_applies(compile_entry, "compile", "eager", variants)
    # an entry naming a variant never excuses the eager item, nor another variant's
    assert not known_entry_applies(compile_entry, "eager", "eager", variants)
    assert not known_entry_applies(compile_entry, "export", "eager", variants)
    # a prefix that ends on the variant (no closing bracket) names it too
    assert known_entry_applies("layernorm[X-forward_equivalence-float32-export", "export", "eager", variants)
