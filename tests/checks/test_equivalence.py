"""forward_equivalence, gradient_equivalence and gradcheck: broken implementations are flagged, correct
ones (including other legitimate cast orders and higher internal precision) are not."""

from __future__ import annotations

import pytest
import torch
from factories.norms import AffineNorm
from helpers import assert_flags, assert_passes, impl, specs
from torch import nn

from normbench.builtins import reference_implementations, torch_implementations


class LayerNorm32(AffineNorm):
    """A correct LayerNorm: float32 statistics, two-pass variance, cast back."""

    def stats_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    def normalize(self, h: torch.Tensor) -> torch.Tensor:
        mean = h.mean(-1, keepdim=True)
        var = (h - mean).pow(2).mean(-1, keepdim=True)
        return (h - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x.to(self.stats_dtype(x)))
        if self.weight is not None:
            y = y * self.weight.to(y.dtype) + self.bias.to(y.dtype)
        return y.to(x.dtype)


class LayerNorm64(LayerNorm32):
    """Higher internal precision than torch: everything in float64. Must not be flagged."""

    def stats_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64


class IgnoresWeight(LayerNorm32):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x.to(self.stats_dtype(x))).to(x.dtype)


class DetachedStatistics(LayerNorm32):
    """Stops the gradient through mean and variance: dX is wrong (a classic hand-written-kernel bug)."""

    def normalize(self, h: torch.Tensor) -> torch.Tensor:
        mean = h.mean(-1, keepdim=True).detach()
        var = (h - mean).pow(2).mean(-1, keepdim=True).detach()
        return (h - mean) / torch.sqrt(var + self.eps)


class _WrongWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(y, weight)
        return y * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        y, weight = ctx.saved_tensors
        # dγ must be Σ dy·x̂; this forgets x̂ (the dβ formula used twice).
        dims = tuple(range(grad.dim() - 1))
        return grad * weight, grad.sum(dims)


class WrongWeightGradient(LayerNorm32):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x.to(self.stats_dtype(x)))
        if self.weight is not None:
            y = _WrongWeightGrad.apply(y, self.weight.to(y.dtype)) + self.bias.to(y.dtype)
        return y.to(x.dtype)


class RMSNormBase(nn.Module):
    offset = 0.0

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        init = torch.zeros(num_features) if self.offset else torch.ones(num_features)
        self.weight = nn.Parameter(init) if affine else None

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float() if x.dtype != torch.float64 else x
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)


class LlamaOrder(RMSNormBase):
    """LLaMA: normalize in fp32, cast to the input dtype, then multiply by the weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized(x).to(x.dtype)
        return y * self.weight.to(x.dtype) if self.weight is not None else y


class TorchOrder(RMSNormBase):
    """torch.nn.RMSNorm: multiply while still in fp32, then cast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized(x)
        return (y * self.weight.to(y.dtype) if self.weight is not None else y).to(x.dtype)


class GemmaOrder(RMSNormBase):
    """Gemma: weight stored zero-centred; multiply by (1 + w) in fp32, then cast."""

    offset = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized(x)
        return (y * (1.0 + self.weight.to(y.dtype)) if self.weight is not None else y).to(x.dtype)


class GemmaOffsetDropped(GemmaOrder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized(x)
        return (y * self.weight.to(y.dtype) if self.weight is not None else y).to(x.dtype)


class GemmaOffsetDoubled(GemmaOrder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized(x)
        return (y * (2.0 + self.weight.to(y.dtype)) if self.weight is not None else y).to(x.dtype)


class GemmaOffsetInHalf(GemmaOrder):
    """(1 + w) added in the half dtype before upcasting (Liger#74, llama.cpp#5810)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized(x)
        if self.weight is None:
            return y.to(x.dtype)
        gain = (1.0 + self.weight.to(x.dtype)).to(y.dtype)
        return (y * gain).to(x.dtype)


class BiasedRunningVar(nn.BatchNorm1d):
    """Feeds the biased batch variance into running_var (pytorch#60528, mlx#3817)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            saved = self.running_var.clone()
        out = super().forward(x)
        with torch.no_grad():
            var = x.double().var(dim=dims, unbiased=False).to(saved.dtype)
            m = self.momentum
            self.running_var.copy_((1 - m) * saved + m * var)
        assert n > 1
        return out


def bn(num_features, eps, affine, momentum, track_running_stats):
    return BiasedRunningVar(num_features, eps=eps, affine=affine, momentum=momentum,
                            track_running_stats=track_running_stats)


ALL_DTYPES = ["float64", "float32", "float16", "bfloat16"]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("factory", [LayerNorm32, LayerNorm64], ids=["fp32-internal", "fp64-internal"])
def test_correct_layernorms_pass(factory, dtype):
    im = impl(f"ok.{factory.__name__}", "layernorm", factory)
    assert_passes(im, "forward_equivalence", dtype=dtype)
    assert_passes(im, "gradient_equivalence", dtype=dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("factory, offset", [(LlamaOrder, 0.0), (TorchOrder, 0.0), (GemmaOrder, 1.0)],
                         ids=["llama", "torch", "gemma"])
def test_legitimate_rmsnorm_cast_orders_pass(factory, offset, dtype):
    im = impl(f"ok.{factory.__name__}", "rmsnorm", factory, weight_offset=offset)
    assert_passes(im, "forward_equivalence", dtype=dtype)
    assert_passes(im, "gradient_equivalence", dtype=dtype)


def test_ignoring_the_weight_is_flagged():
    outcome = assert_flags(impl("bug.ignores_weight", "layernorm", IgnoresWeight), "forward_equivalence")
    assert outcome.counterexample and outcome.counterexample["params"]["affine"] is True
    assert outcome.metrics["output.max_abs"] > 0


@pytest.mark.parametrize("factory", [GemmaOffsetDropped, GemmaOffsetDoubled])
def test_zero_centred_weight_dropped_or_doubled_is_flagged(factory):
    assert_flags(impl(f"bug.{factory.__name__}", "rmsnorm", factory, weight_offset=1.0), "forward_equivalence",
                 dtype="bfloat16")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_zero_centred_weight_added_in_half_is_flagged(dtype):
    outcome = assert_flags(impl("bug.gemma_half", "rmsnorm", GemmaOffsetInHalf, weight_offset=1.0),
                           "forward_equivalence", dtype=dtype)
    assert "systematic per-channel error" in outcome.summary


def test_detached_statistics_are_flagged_by_gradients_and_gradcheck():
    im = impl("bug.detached", "layernorm", DetachedStatistics)
    outcome = assert_flags(im, "gradient_equivalence")
    assert outcome.metrics["worst_tensor"] == "grad_input"
    # the analytical gradient disagrees with finite differences of the same forward
    assert_flags(im, "gradcheck", dtype="float64")
    assert_passes(im, "forward_equivalence")


def test_wrong_weight_gradient_is_flagged():
    outcome = assert_flags(impl("bug.dgamma", "layernorm", WrongWeightGradient), "gradient_equivalence")
    assert outcome.metrics["worst_tensor"] == "grad_weight"


def test_gradcheck_flags_an_inconsistent_custom_backward():
    assert_flags(impl("bug.dgamma", "layernorm", WrongWeightGradient), "gradcheck", dtype="float64")


def test_biased_running_variance_is_flagged_through_the_state():
    outcome = assert_flags(impl("bug.biased_rv", "batchnorm", bn), "forward_equivalence", mode="train")
    assert "running_var" in outcome.summary


@pytest.mark.parametrize("implementation", torch_implementations() + reference_implementations(),
                         ids=lambda i: i.name)
def test_builtins_pass_equivalence(implementation):
    from helpers import specs

    spec = specs()[implementation.family]
    for prop in ("forward_equivalence", "gradient_equivalence", "gradcheck"):
        p = next(p for p in spec.properties if p.name == prop)
        for mode in p.expect:
            for dtype in (["float64"] if prop == "gradcheck" else ALL_DTYPES):
                assert_passes(implementation, prop, dtype=dtype, mode=mode)


def test_an_ill_conditioned_row_among_many_is_not_a_false_alarm_on_torch():
    # Found by the calling-context work: under the seed this name gets, one of the 66048 rows of C = 4 normal values
    # has max|x|/σ ≈ 112, and torch's own float32 F.layer_norm errs there by 43 eps (0.4·κ·eps, what a correct
    # two-pass kernel does); without the per-row conditioning allowance that was 1.18x the bound.
    import dataclasses

    from helpers import shipped

    wrapper = dataclasses.replace(shipped()["F.layer_norm"], name="mutant.AllFiniteOrZeroLayerNorm")
    outcome = assert_passes(wrapper, "forward_equivalence")
    # the row is there, and judged: its error is large relative to a tiny output element (max_rel), yet a few ulp
    # of the output's scale (max_ulp is norm-wise, so a correct kernel no longer reads 1e5 "ulp")
    assert outcome.metrics["output.max_rel"] > 1e-3 and outcome.metrics["output.max_ulp"] < 100


def test_the_conditioning_allowance_is_per_row():
    from normbench.checks.base import CheckContext
    from normbench.checks.equivalence import conditioning_allowance

    spec = specs()["layernorm"]
    prop = next(p for p in spec.properties if p.name == "forward_equivalence")
    ctx = CheckContext(impl=impl("ln", "layernorm", torch.nn.LayerNorm), spec=spec, prop=prop, dtype=torch.float32,
                       mode="any")
    x = torch.tensor([[1.0, -1.0, 0.5, -0.5], [100.0, 100.01, 99.99, 100.0]])
    extra = conditioning_allowance(ctx, x, torch.ones_like(x), {})
    assert extra is not None and float(extra[1].min()) > 1000 * float(extra[0].max())
    rms = CheckContext(impl=impl("rms", "rmsnorm", torch.nn.RMSNorm), spec=specs()["rmsnorm"],
                       prop=prop, dtype=torch.float32, mode="any")
    assert conditioning_allowance(rms, x, torch.ones_like(x), {}) is None  # no centring, nothing to magnify


def test_a_state_buffer_whose_truth_exceeds_its_dtype_is_not_compared():
    # A drawn case at scale 1000 gives a float16 running_var truth of 2.2e5 > 65504: a correct module stores inf.
    from helpers import shipped

    assert_passes(shipped()["reference.batchnorm_masked"], "forward_equivalence", dtype="float16", mode="train")
