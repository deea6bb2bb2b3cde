"""BatchNorm (Ioffe & Szegedy 2015), torch conventions.

Train: normalize with the batch mean and the *biased* batch variance; running = (1-m)·running + m·batch,
m = momentum weighting the NEW value, running_var receiving the *unbiased* variance; momentum=None is the
cumulative average 1/num_batches_tracked. Eval: running statistics when tracked, batch statistics otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from ._affine import affine_parameters, apply_affine


class BatchNormReference(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        affine_parameters(self, num_features, affine)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, dtype=torch.float64))
            self.register_buffer("running_var", torch.ones(num_features, dtype=torch.float64))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Plain BatchNorm has no notion of padding: pads count in the statistics (that is the point of
        # the masked variant), so the mask is accepted and ignored.
        x64 = x.to(torch.float64)
        axes = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            count = x64.numel() // max(x64.shape[1], 1)
            if self.training and count <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                                 f"{tuple(x.shape)}")
            mean = x64.mean(dim=axes)
            var = ((x64 - mean.reshape(shape)) ** 2).mean(dim=axes)
            if self.training and self.track_running_stats:
                self._update(mean.detach(), var.detach(), count)
        else:
            mean = self.running_mean.to(torch.float64)
            var = self.running_var.to(torch.float64)
        y = (x64 - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)
        return apply_affine(self, y, 1).to(x.dtype)

    @torch.no_grad()
    def _update(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1)
        new_mean = (1 - factor) * self.running_mean.to(torch.float64) + factor * mean
        new_var = (1 - factor) * self.running_var.to(torch.float64) + factor * unbiased
        self.running_mean.copy_(new_mean.to(self.running_mean.dtype))
        self.running_var.copy_(new_var.to(self.running_var.dtype))


def build(num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
          track_running_stats: bool = True) -> nn.Module:
    return BatchNormReference(num_features, eps=eps, affine=affine, momentum=momentum,
                              track_running_stats=track_running_stats)
