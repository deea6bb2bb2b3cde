"""Deliberately broken (and a few deliberately correct) norm modules for the invariance and train/eval
checks. Each mutant reproduces one bug class from BUGS.md / NORMS.md in a few lines of plain torch."""

from __future__ import annotations

import torch
from torch import nn


def _affine(module: nn.Module, num_features: int, affine: bool, bias: bool = True) -> None:
    module.weight = nn.Parameter(torch.ones(num_features)) if affine else None
    module.bias = nn.Parameter(torch.zeros(num_features)) if affine and bias else None


def _apply(module: nn.Module, y: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * y.dim()
    shape[axis] = -1
    if module.weight is not None:
        y = y * module.weight.reshape(shape)
    if getattr(module, "bias", None) is not None:
        y = y + module.bias.reshape(shape)
    return y


# -- per-token mutants ---------------------------------------------------------------------------------

class CenteredRMSNorm(nn.Module):
    """An "RMSNorm" that subtracts the mean: a LayerNorm in disguise, so it is shift-invariant."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        return _apply(self, centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + self.eps), -1)


class EpsOnRmsRMSNorm(nn.Module):
    """ε added to the rms outside the square root (the paper's own code; gpt-neox#1337)."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply(self, x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps), -1)


class MaxEpsRMSNorm(nn.Module):
    """y = γ·x / max(rms(x), ε): a ScaleNorm-style clamp, scale-invariant with ε scaling as a¹ (not a²)."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apply(self, x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(self.eps), -1)


class SigmaEpsLayerNorm(nn.Module):
    """ε added to σ instead of σ² (Annotated Transformer, CNTK; NORMS.md)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(-1, keepdim=True)
        sigma = centred.pow(2).mean(-1, keepdim=True).sqrt()
        return _apply(self, centred / (sigma + self.eps), -1)


class BatchWideLayerNorm(nn.Module):
    """A "LayerNorm" whose statistics run over the whole batch, not per token."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean()
        return _apply(self, centred * torch.rsqrt(centred.pow(2).mean() + self.eps), -1)


class CumulativeLayerNorm(nn.Module):
    """Row i is normalized with the statistics of rows 0..i (a streaming/cumulative normalizer): its output
    depends on the rows before it, so reordering the batch changes it."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(x.shape[0], -1)
        count = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).unsqueeze(1) * rows.shape[1]
        mean = rows.sum(1, keepdim=True).cumsum(0) / count
        var = rows.pow(2).sum(1, keepdim=True).cumsum(0) / count - mean.pow(2)
        y = (rows - mean) * torch.rsqrt(var.clamp_min(0) + self.eps)
        return _apply(self, y.reshape(x.shape), -1)


class SequenceLayerNorm(nn.Module):
    """Statistics over (T, C) of each whole sequence, pads included (per sample, so batch-independent)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        centred = x - x.mean(dims, keepdim=True)
        return _apply(self, centred * torch.rsqrt(centred.pow(2).mean(dims, keepdim=True) + self.eps), -1)


class MaskedSequenceLayerNorm(nn.Module):
    """Correct masked variant: statistics over the (T, C) of each sequence's *valid* tokens only.

    Time-major (T, B, C) with a (B, T) mask where True = valid: the opposite of the harness's conventions
    on both counts, to exercise Implementation.token_layout and mask_true_means.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        _affine(self, num_features, affine)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            valid = torch.ones(x.shape[1], x.shape[0], dtype=torch.bool)
        keep = valid.T.unsqueeze(-1)  # (T, B, 1)
        count = keep.sum(dim=(0, 2), keepdim=True) * x.shape[-1]
        zeros = torch.zeros_like(x)
        mean = torch.where(keep, x, zeros).sum(dim=(0, 2), keepdim=True) / count
        centred = torch.where(keep, x - mean, zeros)
        var = centred.pow(2).sum(dim=(0, 2), keepdim=True) / count
        return _apply(self, (x - mean) * torch.rsqrt(var + self.eps), -1)


# -- BatchNorm-like mutants ------------------------------------------------------------------------------

class ManualBatchNorm(nn.Module):
    """BatchNorm in plain torch with torch's conventions, and a `bug` switch for one mutation at a time.

    bug: None (correct), "onnx_momentum" (momentum weighs the OLD value, ONNX BatchNormalization),
    "biased_running_var" (population variance into running_var; pytorch#60528, mlx#3817),
    "ignore_none_momentum" (momentum=None treated as 0.1 instead of the cumulative average; pytorch#31498),
    "no_increment" (num_batches_tracked never incremented), "eval_batch_stats" (eval normalizes with the
    batch statistics, as if track_running_stats were False; pytorch#37823).
    """

    BUGS = (None, "onnx_momentum", "biased_running_var", "ignore_none_momentum", "no_increment",
            "eval_batch_stats")

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True, *, bug: str | None = None) -> None:
        super().__init__()
        assert bug in self.BUGS, bug
        self.eps, self.momentum, self.track_running_stats, self.bug = eps, momentum, track_running_stats, bug
        _affine(self, num_features, affine)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        batch_stats = self.training or not self.track_running_stats or self.bug == "eval_batch_stats"
        if batch_stats:
            mean = x.mean(axes)
            var = x.var(axes, unbiased=False)
            if self.training and self.track_running_stats:
                self._update(mean.detach(), var.detach(), x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return _apply(self, y, 1)

    @torch.no_grad()
    def _update(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        if self.bug != "no_increment":
            self.num_batches_tracked += 1
        if self.momentum is None:
            factor = 0.1 if self.bug == "ignore_none_momentum" else 1.0 / max(1, int(self.num_batches_tracked))
        else:
            factor = self.momentum
        new_var = var if self.bug == "biased_running_var" else var * count / (count - 1)
        old_weight, new_weight = (factor, 1 - factor) if self.bug == "onnx_momentum" else (1 - factor, factor)
        self.running_mean.mul_(old_weight).add_(new_weight * mean)
        self.running_var.mul_(old_weight).add_(new_weight * new_var)


class MaskedBatchNorm(nn.Module):
    """Masked BatchNorm over (N, C, L) with a (N, L) pad mask (True = pad): train statistics over the real
    positions only (what PowerNorm / masked BN must do); its outputs are what the pad check looks at, so it
    keeps its buffers fixed (momentum and track_running_stats are accepted for the spec and not used).
    `leak_nan` multiplies by the mask instead of selecting, so a pad holding inf or NaN poisons the sums
    (inf·0 = NaN) while zeros and finite garbage are still masked correctly."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True, *, leak_nan: bool = False) -> None:
        super().__init__()
        self.eps, self.leak_nan = eps, leak_nan
        _affine(self, num_features, affine)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        if not self.training:
            y = (x - self.running_mean.reshape(shape)) * torch.rsqrt(self.running_var.reshape(shape) + self.eps)
            return _apply(self, y, 1)
        real = torch.ones(x.shape[0], *x.shape[2:], dtype=torch.bool) if pad_mask is None else ~pad_mask
        keep = real.unsqueeze(1)  # (N, 1, L)
        axes = [0, *range(2, x.dim())]
        count = real.sum()
        if self.leak_nan:
            masked = x * keep
        else:
            masked = torch.where(keep, x, torch.zeros_like(x))
        mean = masked.sum(axes) / count
        centred = (x - mean.reshape(shape)) * keep if self.leak_nan else \
            torch.where(keep, x - mean.reshape(shape), torch.zeros_like(x))
        var = centred.pow(2).sum(axes) / count
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return _apply(self, y, 1)


class MaskedTokenBatchNorm(ManualBatchNorm):
    """Masked BatchNorm over (B, T, C) tokens with running statistics (the batchnorm_masked family).

    count_pads: the unbiased correction n/(n-1) uses n = B·T instead of the number of real tokens, so the
    running variance drifts with the amount of padding while every output of the step stays correct.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True, *, count_pads: bool = False) -> None:
        super().__init__(num_features, eps, affine, momentum, track_running_stats)
        self.count_pads = count_pads

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training and self.track_running_stats:
            y = (x - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
            return _apply(self, y, -1)
        real = torch.ones(x.shape[:2], dtype=torch.bool) if pad_mask is None else ~pad_mask
        keep = real.unsqueeze(-1)
        count = int(real.sum())
        zeros = torch.zeros_like(x)
        mean = torch.where(keep, x, zeros).sum((0, 1)) / count
        centred = torch.where(keep, x - mean, zeros)
        var = centred.pow(2).sum((0, 1)) / count
        if self.training and self.track_running_stats:
            self._update(mean.detach(), var.detach(), x.shape[0] * x.shape[1] if self.count_pads else count)
        return torch.where(keep, _apply(self, centred * torch.rsqrt(var + self.eps), -1), zeros)
