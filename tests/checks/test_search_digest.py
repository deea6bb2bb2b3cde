"""A check's search hands hypothesis the seed its derandomized run would derive from the search function's digest,
computed once (normbench.checks.toolkit.search._derandomized_once): the same cases are drawn as when hypothesis
digests the function's source itself, on every item."""

from __future__ import annotations

import torch
from helpers import impl, run
from torch import nn

from normbench.checks.toolkit import search


def _recorded_inputs() -> tuple[list[float], list[tuple[int, ...]]]:
    seen: list[tuple[float, tuple[int, ...]]] = []

    class Recording(nn.LayerNorm):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((float(x.detach().double().sum()), tuple(x.shape)))
            return super().forward(x)

    run(impl("recording", "layernorm", lambda c, eps=1e-5, affine=True: Recording(c, eps, affine)),
        "forward_equivalence")
    return [s for s, _ in seen], [shape for _, shape in seen]


def test_the_cached_digest_draws_what_hypothesis_would(monkeypatch):
    cached = _recorded_inputs()
    digests: list[object] = []
    real = search.function_digest
    monkeypatch.setattr(search, "function_digest", lambda f: digests.append(f) or real(f))
    assert _recorded_inputs() == cached
    assert not digests  # computed once per process, before this test or in its first run
    monkeypatch.setattr(search, "_derandomized_once", lambda s: s)  # hypothesis digests the source itself
    assert _recorded_inputs() == cached


def test_another_seed_draws_other_cases(monkeypatch):
    cached = _recorded_inputs()
    monkeypatch.setattr(search, "_DIGESTS", {})
    monkeypatch.setattr(search, "function_digest", lambda f: b"another digest")
    assert _recorded_inputs() != cached
