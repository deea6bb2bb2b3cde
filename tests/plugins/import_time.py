"""Plugins whose *loading* changes torch the way libraries do at import: each zero-argument callable
runs while its source is loaded, as a library's module body runs on import. Each is a correct LayerNorm, so its
items must get real verdicts wherever the change is only a finding.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from normbench import Implementation
from plugins.hostile import _LayerNorm


class _Exact(_LayerNorm):
    """Computed in float64 and rounded once: within tolerance on every seed (the test ids, and so the seeds, are
    these plugins' own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.misbehave(x)
        weight = None if self.weight is None else self.weight.double()
        bias = None if self.bias is None else self.bias.double()
        return F.layer_norm(x.double(), (x.shape[-1],), weight, bias, self.eps).to(x.dtype)


def _impl(name: str, factory: type[_LayerNorm] = _Exact) -> Implementation:
    return Implementation(name=f"import_time.{name}", family="layernorm", factory=factory)


def dynamo() -> Implementation:
    """transformers, accelerate, lightning, ...: importing torch._dynamo rebinds torch.manual_seed to torch's own
    `torch._disable_dynamo` wrapper of it."""
    import torch._dynamo  # noqa: F401

    return _impl("dynamo")


def wraps_index_select() -> Implementation:
    """torch_geometric.typing: torch.index_select / torch.select replaced at import by functools.wraps wrappers."""
    real = torch.index_select

    @functools.wraps(real)
    def index_select(input, dim, index, *, out=None):  # noqa: A002, ANN001, ANN202 - torch's signature
        return real(input, dim, index) if out is None else real(input, dim, index, out=out)

    torch.index_select = index_select
    return _impl("wraps_index_select")


def wraps_tensor_mean() -> Implementation:
    """A transparent wrapper of a method the float64 reference itself calls: a finding, named."""
    real = torch.Tensor.mean

    @functools.wraps(real)
    def mean(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return real(self, *args, **kwargs)

    torch.Tensor.mean = mean
    return _impl("wraps_tensor_mean")


def matmul_precision() -> Implementation:
    """speechbrain: torch.set_float32_matmul_precision at import."""
    torch.set_float32_matmul_precision("medium")
    return _impl("matmul_precision")


def replaces_layer_norm() -> Implementation:
    """Replaces F.layer_norm at import by a function that does not wrap it: the truth itself would change."""
    def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: ANN001, ANN202
        return x.clone()

    F.layer_norm = layer_norm
    return _impl("replaces_layer_norm")


def patches_judge() -> Implementation:
    """Replaces normbench's compare function at import, even with a wrapper of it: tampering with the judge."""
    import normbench.compare as compare

    compare.compare = functools.wraps(compare.compare)(lambda *args, **kwargs: None)
    return _impl("patches_judge")


def grad_mode_off() -> Implementation:
    """Leaves grad mode off from its import on: no check that differentiates could run."""
    torch.set_grad_enabled(False)
    return _impl("grad_mode_off")


class _LazyDynamo(_Exact):
    def misbehave(self, x: torch.Tensor) -> None:
        import torch._dynamo  # noqa: F401 - lazily, during a call, as torch.compile's first use does


def lazy_dynamo() -> Implementation:
    return _impl("lazy_dynamo", _LazyDynamo)


class _ReplacesSeed(_Exact):
    def misbehave(self, x: torch.Tensor) -> None:
        torch.manual_seed = lambda seed: None  # not a wrapper of the original: every seeded draw is the plugin's


def replaces_seed() -> Implementation:
    return _impl("replaces_seed", _ReplacesSeed)


class _WrapsSeedInForward(_Exact):
    def misbehave(self, x: torch.Tensor) -> None:
        real = torch.manual_seed
        if not getattr(real, "_ours", False):  # once, not once per call
            torch.manual_seed = functools.wraps(real)(lambda seed: real(seed))
            torch.manual_seed._ours = True


def wraps_seed_in_forward() -> Implementation:
    """Even a transparent wrapper is tampering when an item's call installs it: items are judged against the
    fingerprint taken after the import."""
    return _impl("wraps_seed_in_forward", _WrapsSeedInForward)
