"""normbench.run_accounting: every planned item of a judged implementation ends with an outcome (fail closed), an
interrupted run keeps what it never reached, and a variant run carries the other variants' outcomes over."""

from __future__ import annotations

from typing import Any

from normbench.run_accounting import (
    INTERRUPTED,
    NOT_REPORTED,
    NOT_SELECTED,
    complete_outcomes,
    kept_over_interruption,
    other_variants,
    worker_killers,
)

PLAN = [("a[LN-p1]", "LN"), ("a[LN-p2]", "LN"), ("a[LN-p3]", "LN"), ("b[RMS-p1]", "RMS")]


def _unjudged(test_id: str, verdict: str, summary: str) -> dict[str, Any]:
    return {"implementation": dict(PLAN).get(test_id), "verdict": verdict, "summary": summary}


def _passed(test_id: str) -> dict[str, Any]:
    return {"implementation": dict(PLAN)[test_id], "verdict": "pass", "summary": ""}


def test_a_selected_item_that_never_reported_is_an_error_not_a_pass() -> None:
    done = complete_outcomes({"a[LN-p1]": _passed("a[LN-p1]")}, expected=["a[LN-p1]", "a[LN-p2]"], planned=PLAN,
                             crashed=[], interrupted=False, unjudged=_unjudged)
    assert done["a[LN-p1]"]["verdict"] == "pass"
    assert done["a[LN-p2]"] == _unjudged("a[LN-p2]", "error", f"not judged: {NOT_REPORTED}")
    # p3 was planned but not selected: not judged, never silently absent
    assert done["a[LN-p3]"] == _unjudged("a[LN-p3]", "unjudged", NOT_SELECTED)
    # an implementation with no outcome at all is not made up
    assert "b[RMS-p1]" not in done


def test_an_interruption_and_a_lost_worker_say_why() -> None:
    interrupted = complete_outcomes({}, expected=["a[LN-p1]"], planned=PLAN, crashed=[], interrupted=True,
                                    unjudged=_unjudged)
    assert interrupted["a[LN-p1]"]["summary"] == f"not judged: {INTERRUPTED}"
    lost = complete_outcomes({"a[LN-p1]": _passed("a[LN-p1]")}, expected=["a[LN-p1]", "a[LN-p2]", "a[LN-p3]"],
                             planned=PLAN, crashed=["a[LN-p3]", "a[LN-p2]"], interrupted=False, unjudged=_unjudged)
    # the first (sorted) item the worker was on is named as what ended it
    assert "(a[LN-p2]) ended the xdist worker" in lost["a[LN-p3]"]["summary"]
    assert lost["a[LN-p3]"]["verdict"] == "error"


def test_worker_killers_ignore_ids_outside_the_plan() -> None:
    assert worker_killers(["zzz", "a[LN-p3]", "a[LN-p2]"], dict(PLAN)) == {"LN": "a[LN-p2]"}
    assert worker_killers([], dict(PLAN)) == {}


def test_an_interrupted_run_keeps_stored_outcomes_of_the_same_implementation_only() -> None:
    stored = {"a[LN-p2]": {**_passed("a[LN-p2]"), "recorded_utc": "2026-01-01T00:00:00Z"},
              "b[RMS-p1]": {"implementation": "Other", "verdict": "pass"}}
    outcomes = {"a[LN-p2]": _unjudged("a[LN-p2]", "error", "x"), "b[RMS-p1]": _unjudged("b[RMS-p1]", "error", "x")}
    kept = kept_over_interruption(stored, outcomes, not_run=["a[LN-p2]", "b[RMS-p1]", "a[LN-p3]"])
    assert set(kept) == {"a[LN-p2]"}
    assert kept["a[LN-p2]"]["verdict"] == "pass"
    assert "2026-01-01T00:00:00Z" in kept["a[LN-p2]"]["stale"]
    # the stored dict itself is not edited
    assert "stale" not in stored["a[LN-p2]"]


def test_a_variant_run_carries_the_other_variants_of_judged_implementations_over() -> None:
    stored = {"eager-LN": {"implementation": "LN"},  # no variant field: the default variant
              "compile-LN": {"implementation": "LN", "variant": "compile"},
              "export-LN": {"implementation": "LN", "variant": "export"},
              "eager-RMS": {"implementation": "RMS"}}
    outcomes = {"compile-LN": {"implementation": "LN", "variant": "compile"}}
    carried = other_variants(stored, outcomes, variants=["compile"], default_variant="eager")
    # LN's eager and export outcomes survive; its compile one is the new run's; RMS was not judged now
    assert set(carried) == {"eager-LN", "export-LN"}
    assert other_variants(stored, outcomes, variants=["compile", "eager", "export"], default_variant="eager") == {}


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
