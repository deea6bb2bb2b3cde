"""pRMSNorm, ScaleNorm and DyT: built-ins and references meet their specs; mutants of each are flagged."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_flags, assert_passes, impl, over_items, planned_items, run, specs
from normbench.reference.prmsnorm import partial_size
from torch import nn

from normbench.checks import CHECKS
from normbench.families.small_norms import DyT, PartialRMSNorm, ScaleNorm, implementations

FAMILIES = ("prmsnorm", "scalenorm", "dyt")
_IMPLS = {i.name: i for i in implementations()}

ITEMS = planned_items(_IMPLS)


@over_items(ITEMS)
def test_builtins_and_references_meet_their_specs(name: str, prop: str, mode: str, dtype: str) -> None:
    outcome = run(_IMPLS[name], prop, dtype, mode)
    assert outcome.verdict in ("pass", "report", "skip"), outcome.summary


def test_every_family_registers_a_builtin_and_its_reference() -> None:
    for family in FAMILIES:
        names = {i.name for i in _IMPLS.values() if i.family == family}
        assert f"reference.{family}" in names and len(names) == 2, names


# -- pRMSNorm ----------------------------------------------------------------------------------------

def test_partial_size_is_the_papers_ceiling() -> None:
    assert partial_size(769, 0.0625) == 49  # the authors' int(p*C) gives 48
    assert partial_size(32, 0.0625) == 2
    assert partial_size(8, 0.0625) == 1  # int() would give 0: a division by sqrt(eps)
    assert partial_size(8, 0.0) == 8 and partial_size(8, 1.5) == 8  # p outside (0, 1]: plain RMSNorm
    assert PartialRMSNorm(769).k == 49


class FullRMSNorm(PartialRMSNorm):
    """Mutant: a "pRMSNorm" that estimates the rms from all C features (plain RMSNorm)."""

    def __init__(self, num_features: int, eps: float, affine: bool, p: float) -> None:
        super().__init__(num_features, eps, affine, p)
        self.k = num_features


class FloorPRMSNorm(PartialRMSNorm):
    """Mutant (the authors' code): k = int(p*C), one feature fewer than the paper's ceil at C = 769."""

    def __init__(self, num_features: int, eps: float, affine: bool, p: float) -> None:
        super().__init__(num_features, eps, affine, p)
        self.k = max(1, int(p * num_features))


def test_prmsnorm_over_all_features_is_flagged() -> None:
    mutant = impl("mutant.FullRMSNorm", "prmsnorm", FullRMSNorm)
    assert_flags(mutant, "forward_equivalence")
    if "normalization_statistics" in CHECKS:  # a full RMSNorm normalizes exactly: violated expected
        assert_flags(mutant, "normalization_statistics")


def test_prmsnorm_with_floor_partial_size_is_flagged() -> None:
    outcome = assert_flags(impl("mutant.FloorPRMSNorm", "prmsnorm", FloorPRMSNorm), "forward_equivalence")
    assert outcome.counterexample is not None


# -- ScaleNorm ---------------------------------------------------------------------------------------

class AddEpsScaleNorm(ScaleNorm):
    """Mutant: g·x / (‖x‖ + eps), eps added instead of the max."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x.float(), dim=-1, keepdim=True) + self.eps
        g = self.weight.float() if self.weight is not None else self.scale
        return (x.float() * g / norm).to(x.dtype)


class RmsScaleNorm(ScaleNorm):
    """Mutant: divides by the rms instead of the l2 norm (a factor sqrt(C) off)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.float().pow(2).mean(-1, keepdim=True).sqrt().clamp_min(self.eps)
        g = self.weight.float() if self.weight is not None else self.scale
        return (x.float() * g / rms).to(x.dtype)


def test_scalenorm_with_eps_added_is_flagged() -> None:
    assert_flags(impl("mutant.AddEpsScaleNorm", "scalenorm", AddEpsScaleNorm), "forward_equivalence")


def test_scalenorm_with_rms_is_flagged() -> None:
    assert_flags(impl("mutant.RmsScaleNorm", "scalenorm", RmsScaleNorm), "forward_equivalence")


def test_scalenorm_scale_invariance_needs_eps_power_one() -> None:
    """The spec's eps_power 1 is what makes ScaleNorm pass: eps bounds ‖x‖, not ‖x‖²."""
    prop = next(p for p in specs()["scalenorm"].properties if p.name == "scale_invariance")
    assert prop.options["eps_power"] == 1
    assert_passes(_IMPLS["normbench.ScaleNorm"], "scale_invariance")


def test_scalenorm_weight_is_one_scalar_initialized_to_sqrt_c() -> None:
    m = ScaleNorm(769)
    assert m.weight.shape == (1,) and math.isclose(float(m.weight.detach()), math.sqrt(769), rel_tol=1e-6)


# -- DyT ---------------------------------------------------------------------------------------------

class AlphaOutsideDyT(DyT):
    """Mutant: γ·α·tanh(x) + β, α applied outside the tanh."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.alpha.float() * torch.tanh(x.float())
        if self.weight is not None:
            y = y * self.weight.float() + self.bias.float()
        return y.to(x.dtype)


def _dyt_as_layernorm(num_features: int, eps: float, affine: bool) -> nn.Module:
    return DyT(num_features, eps, affine)


def _layernorm_as_dyt(num_features: int, eps: float, affine: bool, alpha_init: float) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


def test_dyt_with_alpha_outside_tanh_is_flagged() -> None:
    assert_flags(impl("mutant.AlphaOutsideDyT", "dyt", AlphaOutsideDyT), "forward_equivalence")


@pytest.mark.parametrize("prop", ["scale_invariance", "shift_invariance", "normalization_statistics"])
def test_dyt_mislabeled_as_layernorm_is_flagged(prop: str) -> None:
    """DyT registered as a LayerNorm: the normalization properties it lacks fail."""
    outcome = assert_flags(impl("mutant.DyTAsLayerNorm", "layernorm", _dyt_as_layernorm), prop)
    assert outcome.observed == "violated"


@pytest.mark.parametrize("prop", ["scale_invariance", "shift_invariance", "normalization_statistics"])
def test_layernorm_mislabeled_as_dyt_is_flagged(prop: str) -> None:
    """The reverse: a real norm registered as DyT has the properties DyT must not have."""
    outcome = assert_flags(impl("mutant.LayerNormAsDyT", "dyt", _layernorm_as_dyt), prop)
    assert outcome.observed == "holds"
