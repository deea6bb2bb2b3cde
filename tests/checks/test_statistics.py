"""normalization_statistics: torch's modules and the references have their family's moments; a LayerNorm with
the unbiased variance, and a zero-centred γ registered without its offset, are flagged."""

from __future__ import annotations

import torch
from helpers import assert_flags, assert_passes, impl, over_items, run, shipped, spec_items
from mutants_numerics import GemmaRMSNorm, UnbiasedLayerNorm

IMPLS = shipped(families=False)
_ITEMS = spec_items(IMPLS, ("normalization_statistics",))


@over_items(_ITEMS)
def test_torch_and_references_meet_their_specs(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(IMPLS[name], "normalization_statistics", dtype, mode)
    assert outcome.verdict == "pass", outcome.summary
    assert outcome.metrics["groups"] > 0 and outcome.metrics["tol_ratio"] < 1


def test_unbiased_variance_is_flagged() -> None:
    """torch.std's default divides by C − 1: the output variance is (C − 1)/C = 0.875 at C = 8."""
    outcome = assert_flags(impl("mutant.UnbiasedLayerNorm", "layernorm", UnbiasedLayerNorm),
                           "normalization_statistics")
    assert outcome.observed == "violated"
    assert "variance 0.875" in outcome.summary
    assert outcome.counterexample["group_size"] == 8


def test_gamma_one_respects_weight_offset() -> None:
    """Gemma stores γ − 1: with weight_offset = 1 the check sets weight = 0 (γ = 1) and the moments hold;
    registered without the offset, weight = 1 means γ = 2 and the mean square is 4."""
    assert_passes(impl("correct.gemma", "rmsnorm", GemmaRMSNorm, weight_offset=1.0), "normalization_statistics")
    outcome = assert_flags(impl("mutant.gemma_no_offset", "rmsnorm", GemmaRMSNorm), "normalization_statistics")
    assert "gamma=1" in outcome.summary and "mean square 4" in outcome.summary


class _Shifted(torch.nn.Module):
    """A LayerNorm whose output is shifted by 0.01: unit variance, but mean 0.01 in every token."""

    def __init__(self, num_features: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.inner = torch.nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
        self.weight, self.bias = self.inner.weight, self.inner.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 0.01


def test_nonzero_mean_is_flagged() -> None:
    outcome = assert_flags(impl("mutant.shifted", "layernorm", _Shifted), "normalization_statistics")
    assert "mean 0.01" in outcome.summary
