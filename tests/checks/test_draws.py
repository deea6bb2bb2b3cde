"""A check's hypothesis search draws no constant from the source of the modules its process imported
(normbench.checks.toolkit.draws): the draws depend on the strategy and the seed only, not on how normbench is
installed, the folder it runs in, or constants a plugin's author put in the plugin's source."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import providers
from hypothesis.internal.constants_ast import Constants

from normbench.checks.toolkit.draws import judge_draws

#: a constant no strategy below draws on its own in 300 examples (one value of a million)
PLANTED = 424_242


def _draws(monkeypatch: pytest.MonkeyPatch, judged: bool) -> list[int]:
    # a "local" module of this process whose source holds PLANTED (as a plugin's module or an editable
    # normbench's would): what hypothesis's own provider offers as the constants to draw now and then
    monkeypatch.setattr(providers, "_get_local_constants", lambda: Constants(integers={PLANTED}))
    providers.CONSTANTS_CACHE.cache.clear()
    drawn: list[int] = []

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(st.integers(0, 10**6))
    def search(value: int) -> None:
        drawn.append(value)

    try:
        if judged:
            with judge_draws():
                search()
        else:
            search()
    finally:
        providers.CONSTANTS_CACHE.cache.clear()
    return drawn


def test_hypothesis_alone_draws_the_local_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    # the hazard the judge removes: without it the planted constant is drawn (about 1 draw in 20)
    assert PLANTED in _draws(monkeypatch, judged=False)


def test_a_checks_search_never_draws_it(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _draws(monkeypatch, judged=True)
    assert len(drawn) > 100 and PLANTED not in drawn


def test_hypothesis_draws_as_before_once_the_search_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    _draws(monkeypatch, judged=True)
    assert "_local_constants" in vars(providers.HypothesisProvider)  # what draws.py swaps exists in this hypothesis
    assert PLANTED in _draws(monkeypatch, judged=False)
