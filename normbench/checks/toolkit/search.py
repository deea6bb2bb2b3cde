"""Search for a counterexample: deterministic cases first, then hypothesis, which shrinks a failure; and the
`Observation` a search comes to."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import given, reject, seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.internal.conjecture.utils import int_from_bytes
from hypothesis.internal.reflection import function_digest

from normbench.checks.base import CheckContext, Observation, Skip, Undeclared
from normbench.checks.toolkit.draws import judge_draws

T = TypeVar("T")


@dataclass
class Trial:
    """The result of evaluating one case: ok, the numbers, and a one-line description."""

    ok: bool
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    counterexample: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """What a search found: whether every trial passed, how many ran, the failing one or the worst passing one."""

    ok: bool
    trials: int
    failure: Trial | None
    #: the trial that used the most tolerance (reported when everything passed)
    worst: Trial | None


class _Skipped(AssertionError):
    """A drawn case raised Skip: hypothesis must see a failure to stop; the Skip itself is re-raised after."""


class _Found(AssertionError):
    pass


#: function_digest of `search` below, by its code. Derandomized, hypothesis seeds a search from the digest of the test
#: function's source, and keys its database by it: inspect.getsource and a tokenize of the function, 0.8 ms, twice an
#: item. Every item's `search` is the same code, so the digest is computed once and handed over as the seed it
#: derives (`@seed`: the same Random, so the same draws) and the key it would compute (database=None: unused).
_DIGESTS: dict[Any, bytes] = {}


def _derandomized_once(search: Any) -> Any:
    inner = search.hypothesis.inner_test
    digest = _DIGESTS.get(inner.__code__)
    if digest is None:
        digest = _DIGESTS[inner.__code__] = function_digest(inner)
    search = seed(int_from_bytes(digest))(search)
    search._hypothesis_internal_database_key = digest
    return search


def find_counterexample(ctx: CheckContext, evaluate: Callable[[T], Trial], explicit: Sequence[T] = (),
                        strategy: st.SearchStrategy[T] | None = None,
                        score: Callable[[Trial], float] = lambda t: float(t.metrics.get("tol_ratio", 0.0)),
                        ) -> SearchResult:
    """Evaluate the explicit cases, then (if none failed) hypothesis examples from `strategy`.

    A hypothesis failure is shrunk; the last failing trial recorded is the minimal one, since hypothesis
    replays the shrunk example last. Exceptions other than a failed trial propagate unchanged.
    """
    trials = 0
    worst: Trial | None = None

    def run(case: T) -> Trial:
        nonlocal trials, worst
        trials += 1
        trial = evaluate(case)
        if worst is None or score(trial) > score(worst):
            worst = trial
        return trial

    for case in explicit:
        try:
            trial = run(case)
        except Undeclared as exc:  # a case outside what the implementation declares it takes: the next one
            ctx.not_declared.append(str(exc))
            continue
        if not trial.ok:
            return SearchResult(False, trials, trial, worst)
    if strategy is None:
        return _result_or_undeclared(ctx, trials, worst)
    failures: list[Trial] = []
    skipped: list[Skip] = []

    @ctx.hypothesis_settings()
    @given(strategy)
    def search(case: T) -> None:
        # A drawn case the module cannot be judged on (a deployment variant that cannot run it) ends the search
        # as a skip, like an explicit case would; every later draw (hypothesis shrinking it) stops at once.
        if skipped:
            raise _Skipped(str(skipped[0]))
        try:
            trial = run(case)
        except Undeclared as exc:
            ctx.not_declared.append(str(exc))
            reject()
        except Skip as exc:
            skipped.append(exc)
            raise _Skipped(str(exc)) from None
        if not trial.ok:
            failures.append(trial)
            raise _Found(trial.summary)

    try:
        with judge_draws():  # the same draws wherever normbench is installed and runs (toolkit/draws.py)
            _derandomized_once(search)()
    except Unsatisfiable:
        pass  # every draw was outside what the implementation declares (rejected): the explicit cases judged it
    except (_Found, _Skipped, BaseExceptionGroup):
        # a failing draw outranks a draw that could not be judged (hypothesis may report both, as a group)
        if failures:
            return SearchResult(False, trials, failures[-1], worst)
        if not skipped:
            raise
        raise skipped[0] from None
    return _result_or_undeclared(ctx, trials, worst)


def _result_or_undeclared(ctx: CheckContext, trials: int, worst: Trial | None) -> SearchResult:
    """A passing result; when no case at all could run (each outside what the implementation declares), the
    item is skipped with the reason instead."""
    if worst is None and ctx.not_declared:
        raise Undeclared(f"every case of this item is outside what the implementation declares: "
                         f"{ctx.not_declared[0]}")
    return SearchResult(True, trials, None, worst)


def measured_score(trial: Trial) -> float:
    """How much tolerance a trial used; a trial that measured nothing ranks below every measured one."""
    if not trial.metrics.get("measured", 1):
        return -1.0
    return float(trial.metrics.get("tol_ratio", 0.0))


def search(ctx: CheckContext, evaluate: Callable[[T], Trial], explicit: Sequence[T],
           strategy: st.SearchStrategy[T] | None) -> SearchResult:
    """find_counterexample, ranking unmeasurable trials last so the reported worst one was measured."""
    return find_counterexample(ctx, evaluate, explicit, strategy, score=measured_score)


def observation(what: str, result: SearchResult, *, held: str = "holds within tolerance",
                broken: str = "does not hold") -> Observation:
    """Turn a search result into an Observation, `what` followed by `held` or `broken` (the equivalence checks say
    "within tolerance" / "out of tolerance": nothing there holds or not, it is near the truth or not); raises Skip
    when nothing at all could be measured."""
    trial = result.failure or result.worst
    if trial is None:
        raise Skip(f"{what}: no case to run")
    if result.ok and not trial.metrics.get("measured", 1):
        raise Skip(f"{what}: not measurable in this dtype ({trial.summary})")
    if result.ok:
        summary = f"{what} {held} over {result.trials} cases; worst: {trial.summary}"
    else:
        summary = f"{what} {broken}: {trial.summary}"
    return Observation(holds=result.ok, summary=summary, metrics={**trial.metrics, "cases": result.trials},
                       counterexample=None if result.ok else trial.counterexample)
