"""Fail-closed accounting of a conformance run: every planned item of a judged implementation ends with an outcome.

A run may lose items (an xdist worker killed by a plugin, ^C, -x, -k): an implementation must never be said to
conform on a partial plan, so what was never reported is an ``error`` that says why, what was not selected is
``unjudged``. Pure functions over outcomes (normbench.outcome.Outcome): the pytest plugin gathers the inputs and
stores the result (normbench.pytest_plugin); the store keeps, marked ``stale``, the stored outcome of an item an
interrupted run never reached (normbench.store, the run's record names those items).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from normbench.outcome import Outcome
from normbench.verdicts import Verdict

#: builds the outcome of an item that has no verdict: (test id, verdict, summary) -> outcome
UnjudgedOutcome = Callable[[str, Verdict, str], Outcome]

INTERRUPTED = "the run was interrupted (-x, --maxfail or ^C) before it"
NOT_REPORTED = "no report came back for it (a lost xdist worker?)"
NOT_SELECTED = "not selected in this run (-k or deselected), so not judged"


def worker_killers(crashed: Iterable[str], implementation_of: Mapping[str, str]) -> dict[str, str]:
    """The implementations an xdist worker was judging when it was lost, each with the (first, sorted) item it was
    on. `crashed` holds the test ids reported with when="???"; `implementation_of` maps a planned test id to its
    implementation's name (an id outside the plan names no implementation)."""
    found: dict[str, str] = {}
    for test_id in sorted(crashed):
        name = implementation_of.get(test_id)
        if name is not None:
            found.setdefault(name, test_id)
    return found


def complete_outcomes(outcomes: Mapping[str, Outcome], expected: Iterable[str],
                      planned: Iterable[tuple[str, str]], crashed: Iterable[str], interrupted: bool,
                      unjudged: UnjudgedOutcome) -> dict[str, Outcome]:
    """`outcomes` with every planned item of every judged implementation accounted for.

    `expected` holds the test ids this run selected; `planned` the (test id, implementation) of every item of the
    plan, in plan order. A selected item that never reported is an error (why: interrupted, a lost worker, or the
    worker it was on was ended by another item of its implementation); an item of an implementation that has an
    outcome but that this run did not select is `unjudged`.
    """
    completed = dict(outcomes)
    planned = list(planned)
    implementation_of = dict(planned)
    killers = worker_killers(crashed, implementation_of)
    why = INTERRUPTED if interrupted else NOT_REPORTED
    for test_id in sorted(set(expected) - set(completed)):
        killed = killers.get(implementation_of.get(test_id, ""))
        because = (f"an item of this implementation ({killed}) ended the xdist worker judging it, so its items are "
                   "not judged again" if killed and not interrupted else why)
        completed[test_id] = unjudged(test_id, Verdict.ERROR, f"not judged: {because}")
    judged_implementations = {o.key.implementation for o in completed.values() if o.key is not None}
    for test_id, name in planned:
        if name in judged_implementations and test_id not in completed:
            completed[test_id] = unjudged(test_id, Verdict.UNJUDGED, NOT_SELECTED)
    return completed
