"""What MABN and Unified Normalization share: second-moment statistics of the real tokens in train, and in eval
the fixed, foldable map γ·x/sqrt(running_var + ε) + β (features last, a pad mask with True = pad)."""

from __future__ import annotations

import torch
from torch import nn

from normbench.families._affine import scale_only_eval_map
from normbench.families._tokens import compute_dtype, gather, real_tokens, scatter

#: the renormalization ratio r = sqrt(var + ε)/sqrt(running_var + ε) is clipped to [1/5, 5] (authors' code)
RATIO_BOUNDS = (0.2, 5.0)


class OfflineTokenNorm(nn.Module):
    """Subclasses set `num_features`, `eps`, the affine parameters and `running_var`, name the method and what
    train normalizes with (for messages), and implement `_train(tokens, acc)` on the (n_real, C) real tokens."""

    method = ""
    train_statistic = ""

    def _train(self, tokens: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def _affine(self, z: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return z
        return torch.addcmul(self.bias.to(z.dtype), z, self.weight.to(z.dtype))

    def _affine_parameters(self, acc: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (None if self.weight is None else self.weight.to(acc),
                None if self.bias is None else self.bias.to(acc))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        c = self.num_features
        if x.dim() < 2 or x.shape[-1] != c:
            raise ValueError(f"expected tokens with {c} features last, got shape {tuple(x.shape)}")
        acc = compute_dtype(x)
        flat = x.reshape(-1, c)
        if not self.training:
            z = flat.to(acc) * torch.rsqrt(self.running_var.to(acc) + self.eps)
            return self._affine(z).reshape(x.shape).to(x.dtype)
        keep = real_tokens(x, pad_mask)
        tokens = gather(flat, keep).to(acc)
        if tokens.shape[0] == 0:
            raise ValueError(f"{self.method} in train mode needs at least one real token")
        return scatter(self._train(tokens, acc), keep, flat.shape[0]).reshape(x.shape).to(x.dtype)

    def folding_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) of the eval map y = s⊙x + t over the last axis, for `normbench.fold`."""
        if self.training:
            raise ValueError(f"in train mode it normalizes with {self.train_statistic}; call .eval() first")
        return scale_only_eval_map(self, self.running_var)
