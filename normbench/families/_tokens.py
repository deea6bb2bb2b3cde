"""Token plumbing shared by the batch-statistics seed families (PowerNorm, Unified Normalization, MABN).

The modules take tokens with features last - (B, T, C), (N, C), or fairseq's time-major (T, B, C) - and a
pad mask (True = pad) over the token axes. Train-mode statistics are computed from the real tokens only,
gathered into an (n_real, C) matrix, so pad values (NaN included) never enter an arithmetic operation; the
outputs are scattered back with zeros at the pads, which therefore also receive no gradient.
"""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half inputs (squares of |x| > 256 overflow float16; bf16 sums lose the spread)."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def real_tokens(x: torch.Tensor, pad_mask: torch.Tensor | None, time_major: bool = False) -> torch.Tensor | None:
    """(N,) bool over x.reshape(-1, C) rows, True = real token; None when there is no mask.

    The mask is (B, T) for (B, T, C) tokens and also for time-major (T, B, C) ones (fairseq's convention), else
    of shape x.shape[:-1].
    """
    if pad_mask is None:
        return None
    mask = pad_mask.to(device=x.device, dtype=torch.bool)
    if time_major and x.dim() == 3:
        if tuple(mask.shape) != (x.shape[1], x.shape[0]):
            raise ValueError(f"pad_mask shape {tuple(mask.shape)} does not match (B, T) = "
                             f"{(x.shape[1], x.shape[0])} of a (T, B, C) input")
        mask = mask.transpose(0, 1)
    elif tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"pad_mask shape {tuple(mask.shape)} does not match the token shape {tuple(x.shape[:-1])}")
    return ~mask.reshape(-1)


def gather(flat: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return flat if keep is None else flat[keep]


def scatter(values: torch.Tensor, keep: torch.Tensor | None, rows: int) -> torch.Tensor:
    """values (n_real, C) back into (rows, C) with zeros at the pads (differentiable)."""
    if keep is None:
        return values
    return values.new_zeros(rows, values.shape[-1]).index_put((keep,), values)


def old_value(buffer: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of a state buffer in `dtype`, detached from later in-place updates of the buffer."""
    return buffer.detach().to(dtype=dtype, copy=True)
