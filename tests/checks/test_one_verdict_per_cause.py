"""One clear verdict per cause: a module without a float64 path gets one explained item, and layout
checks compare the module with itself, so an unrelated forward deviation is reported once, under
forward_equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from factories.norms import AffineNorm
from helpers import assert_flags, assert_passes, impl, run
from torch import nn

NO_FLOAT64 = "no float64 path: float64 input computed in float32"


class Float32ComputeLayerNorm(AffineNorm):
    """HF style: upcast to float32 whatever the input, cast back; right in every dtype but float64."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), (x.shape[-1],), w, b, self.eps).to(x.dtype)


class UnbiasedVarianceLayerNorm(AffineNorm):
    """Wrong in every dtype (variance with Bessel's correction): a real deviation, not a float32 path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + self.eps)
        return y if self.weight is None else y * self.weight + self.bias


FLOAT32_ONLY = impl("float32-compute", "layernorm", Float32ComputeLayerNorm)


def test_no_float64_path_is_one_explained_forward_failure():
    outcome = assert_flags(FLOAT32_ONLY, "forward_equivalence", dtype="float64")
    assert NO_FLOAT64 in outcome.summary and "declare dtypes without float64" in outcome.summary
    assert outcome.metrics["float32_tol_ratio"] <= 1 < outcome.metrics["float64_tol_ratio"]


@pytest.mark.parametrize("prop", ["gradient_equivalence", "gradcheck"])
def test_the_other_float64_items_skip_with_the_same_reason(prop):
    outcome = run(FLOAT32_ONLY, prop, dtype="float64")
    assert outcome.verdict == "skip" and NO_FLOAT64 in outcome.summary


def test_the_float32_only_module_is_right_in_float32():
    assert_passes(FLOAT32_ONLY, "forward_equivalence", dtype="float32")
    assert_passes(FLOAT32_ONLY, "gradient_equivalence", dtype="float32")


def test_a_real_deviation_is_not_explained_away_as_a_float32_path():
    wrong = impl("unbiased", "layernorm", UnbiasedVarianceLayerNorm)
    outcome = assert_flags(wrong, "forward_equivalence", dtype="float64")
    assert NO_FLOAT64 not in outcome.summary
    assert assert_flags(wrong, "gradient_equivalence", dtype="float64")


def test_a_float64_module_is_judged_as_before():
    ln = impl("ln", "layernorm", lambda c, eps, affine: nn.LayerNorm(c, eps=eps, elementwise_affine=affine))
    for prop in ("forward_equivalence", "gradient_equivalence", "gradcheck"):
        assert_passes(ln, prop, dtype="float64")


# -- layout checks compare the module with itself ---------------------------------------------------------

class SlightlyOffLayerNorm(nn.Module):
    """A small forward deviation in every layout alike (output scaled by 1 + 1e-4): forward_equivalence's
    finding, not a layout bug."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)
        self.weight, self.bias = self.norm.weight, self.norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * (1 + 1e-4)


class WrongWhenStridedLayerNorm(SlightlyOffLayerNorm):
    """Right on contiguous input; on any other layout it reads the rows in storage order (packed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous():
            return self.norm(x)
        packed = x.detach().clone().as_strided(x.shape, x.contiguous().stride())  # storage read as row-major
        return self.norm(packed + (x - x.detach()))


def test_a_forward_deviation_alone_is_not_a_layout_failure():
    off = impl("slightly-off", "layernorm", SlightlyOffLayerNorm)
    assert_flags(off, "forward_equivalence")
    outcome = assert_passes(off, "noncontiguous_input")
    assert "contiguous copy" in outcome.summary


def test_a_forward_deviation_alone_is_not_a_stale_output():
    # no_stale_output compares with the same module on a fresh tensor, not with the truth.
    assert_passes(impl("slightly-off", "layernorm", SlightlyOffLayerNorm), "no_stale_output")


def test_a_module_wrong_only_for_noncontiguous_input_is_flagged():
    wrong = impl("wrong-when-strided", "layernorm", WrongWhenStridedLayerNorm)
    assert_passes(wrong, "forward_equivalence")
    outcome = assert_flags(wrong, "noncontiguous_input")
    assert not outcome.counterexample["layout"]["is_contiguous"]
    assert "the layout is the cause" in outcome.summary
