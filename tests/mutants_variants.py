"""Modules that behave in eager mode and break only when deployed, for the variant-specific properties."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn


class SloppyWhenCompiledLayerNorm(nn.LayerNorm):
    """Eager: torch's LayerNorm. Under torch.compile it takes a "fast path" with a coarse epsilon (1e-2, a kernel
    tuned for half precision): the kind of divergence a compile-only branch introduces. (A round trip through
    bfloat16 would not do: Inductor keeps fused intermediates in float32 and drops it.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, max(self.eps, 1e-2))
        return super().forward(x)


class RecompilesEveryShapeLayerNorm(nn.LayerNorm):
    """Correct numbers, but a Python loop over the rows: Dynamo unrolls it, which specialises the compiled graph
    on the batch size, so every new batch size recompiles."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [F.layer_norm(x[i], self.normalized_shape, self.weight, self.bias, self.eps) for i in range(len(x))]
        return torch.stack(rows)


class ExportDropsRunningStatsBatchNorm(nn.BatchNorm1d):
    """Eager: torch's BatchNorm1d. Exported, it normalizes with the batch statistics even in eval mode: the exported
    graph has lost the running statistics (what a forward that forgets `self.training` under export does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


class CompilerFailsLayerNorm(nn.LayerNorm):
    """Eager: torch's LayerNorm. Compiled, Dynamo fails to trace it (a reshape its fake tensors refuse), while the
    eager forward runs: the compile deployment is unavailable for it, one explained skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            x = x.reshape(-1, x.shape[-1] + 1)
        return super().forward(x)


def compiler_fails(num_features: int, eps: float, affine: bool) -> nn.Module:
    return CompilerFailsLayerNorm(num_features, eps=eps, elementwise_affine=affine)


def sloppy_when_compiled(num_features: int, eps: float, affine: bool) -> nn.Module:
    return SloppyWhenCompiledLayerNorm(num_features, eps=eps, elementwise_affine=affine)


def recompiles_every_shape(num_features: int, eps: float, affine: bool) -> nn.Module:
    return RecompilesEveryShapeLayerNorm(num_features, eps=eps, elementwise_affine=affine)


def export_drops_running_stats(num_features: int, eps: float, affine: bool, momentum: float | None,
                               track_running_stats: bool) -> nn.Module:
    return ExportDropsRunningStatsBatchNorm(num_features, eps=eps, momentum=momentum, affine=affine,
                                            track_running_stats=track_running_stats)
