"""Residual placements as Transformer blocks: Post-LN, Pre-LN, Sandwich-LN and DeepNorm.

Each block is self-attention then a GELU feed-forward network, each sublayer wrapped by the placement's
LayerNorm(s) and residual. The parameter layout is the family contract (reference/placement.py): flat
w_q, w_k, w_v, w_o, b_o, w_ff1, b_ff1, w_ff2, b_ff2 in the torch Linear convention, and the LayerNorms' γ/β
stacked as `weight` / `bias` (L, C), so the suite can hand the reference block the very same weights.

DeepNorm (Wang et al. 2022, arXiv:2203.00555): x ← LN(α·x + F(x)), and at initialization the FFN, value
and attention-output weights get xavier-normal with gain β (q and k gain 1), the paper's pseudo-code. For an
encoder-decoder encoder we use the paper's β = 0.87·(N⁴M)^(-1/16); the authors' torchscale code divides by
(N⁴M)^(1/16)/1.15, i.e. β = 1.15·(N⁴M)^(-1/16) (`encoder_beta_constant=1.15` selects it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from normbench.families._affine import add_affine
from normbench.implementation import Implementation

#: LayerNorms per block (two sublayers).
NORM_COUNT = {"post_ln": 2, "pre_ln": 2, "sandwich_ln": 4, "deepnorm": 2}
#: DeepNorm scales these at initialization; q and k keep gain 1.
DEEPNORM_SCALED = frozenset({"w_v", "w_o", "w_ff1", "w_ff2"})


def deepnorm_alpha_beta(encoder_layers: int, decoder_layers: int, decoder_block: bool,
                        encoder_beta_constant: float = 0.87) -> tuple[float, float]:
    """DeepNorm's (α, β) for one block, from the paper's Figure 2 / Table 1.

    encoder-only (N): α = (2N)^(1/4), β = (8N)^(-1/4); decoder-only (M): the same in M; encoder-decoder:
    encoder α = 0.81·(N⁴M)^(1/16), β = c·(N⁴M)^(-1/16) with c = 0.87 (paper) or 1.15 (torchscale),
    decoder α = (3M)^(1/4), β = (12M)^(-1/4).
    """
    n, m = encoder_layers, decoder_layers
    if n < 0 or m < 0 or (n == 0 and m == 0):
        raise ValueError(f"DeepNorm needs N, M >= 0 and not both 0 (got N={n}, M={m})")
    if n and m:
        if decoder_block:
            return math.pow(3.0 * m, 0.25), math.pow(12.0 * m, -0.25)
        base = math.pow(float(n) ** 4 * m, 1.0 / 16.0)
        return 0.81 * base, encoder_beta_constant / base
    if decoder_block and not m:
        raise ValueError(f"a decoder block needs decoder_layers > 0 (got N={n}, M={m})")
    if not decoder_block and not n:
        raise ValueError(f"an encoder block needs encoder_layers > 0 (got N={n}, M={m})")
    layers = m if decoder_block else n
    return math.pow(2.0 * layers, 0.25), math.pow(8.0 * layers, -0.25)


class PlacementBlock(nn.Module):
    """One Transformer block with the LayerNorms placed as `placement` says."""

    def __init__(self, num_features: int, placement: str, eps: float = 1e-5, affine: bool = True, num_heads: int = 2,
                 alpha: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        if placement not in NORM_COUNT:
            raise ValueError(f"unknown placement {placement!r}; choose from {sorted(NORM_COUNT)}")
        if num_features % num_heads:
            raise ValueError(f"num_features={num_features} must be divisible by num_heads={num_heads}")
        c, hidden = num_features, 2 * num_features
        self.placement, self.eps, self.num_heads = placement, eps, num_heads
        self.alpha, self.beta = alpha, beta
        for name, shape in (("w_q", (c, c)), ("w_k", (c, c)), ("w_v", (c, c)), ("w_o", (c, c)),
                            ("w_ff1", (hidden, c)), ("w_ff2", (c, hidden))):
            weight = nn.Parameter(torch.empty(shape))
            nn.init.xavier_normal_(weight, gain=beta if name in DEEPNORM_SCALED else 1.0)
            self.register_parameter(name, weight)
        for name, size in (("b_o", c), ("b_ff1", hidden), ("b_ff2", c)):
            self.register_parameter(name, nn.Parameter(torch.zeros(size)))
        add_affine(self, (NORM_COUNT[placement], c), affine)

    def extra_repr(self) -> str:
        return f"placement={self.placement}, alpha={self.alpha:.4g}, beta={self.beta:.4g}, heads={self.num_heads}"

    def _ln(self, h: torch.Tensor, i: int) -> torch.Tensor:
        w = self.weight[i] if self.weight is not None else None
        b = self.bias[i] if self.bias is not None else None
        return F.layer_norm(h, (h.shape[-1],), w, b, self.eps)

    def _attention(self, h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        b, t, c = h.shape

        def split(w: torch.Tensor) -> torch.Tensor:
            return F.linear(h, w).view(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)

        mask = keep[:, None, None, :] if keep is not None else None  # True = may attend
        out = F.scaled_dot_product_attention(split(self.w_q), split(self.w_k), split(self.w_v), attn_mask=mask)
        return F.linear(out.transpose(1, 2).reshape(b, t, c), self.w_o, self.b_o)

    def _ffn(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(F.gelu(F.linear(h, self.w_ff1, self.b_ff1)), self.w_ff2, self.b_ff2)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = None
        if pad_mask is not None:
            pad = pad_mask.to(device=x.device, dtype=torch.bool)
            x = x.masked_fill(pad.unsqueeze(-1), 0)  # NaN pads must not reach attention's weighted sum
            keep = ~pad
        h = x
        for i, sub in enumerate((lambda z: self._attention(z, keep), self._ffn)):
            if self.placement in ("post_ln", "deepnorm"):
                h = self._ln(self.alpha * h + sub(h), i)
            elif self.placement == "pre_ln":
                h = h + sub(self._ln(h, i))
            else:
                h = h + self._ln(sub(self._ln(h, 2 * i)), 2 * i + 1)
        return h


def post_ln_block(num_features: int, eps: float, affine: bool, num_heads: int) -> nn.Module:
    return PlacementBlock(num_features, "post_ln", eps, affine, num_heads)


def pre_ln_block(num_features: int, eps: float, affine: bool, num_heads: int) -> nn.Module:
    return PlacementBlock(num_features, "pre_ln", eps, affine, num_heads)


def sandwich_ln_block(num_features: int, eps: float, affine: bool, num_heads: int) -> nn.Module:
    return PlacementBlock(num_features, "sandwich_ln", eps, affine, num_heads)


def deepnorm_block(num_features: int, eps: float, affine: bool, num_heads: int, encoder_layers: int,
                   decoder_layers: int, decoder_block: bool) -> nn.Module:
    alpha, beta = deepnorm_alpha_beta(encoder_layers, decoder_layers, decoder_block)
    return PlacementBlock(num_features, "deepnorm", eps, affine, num_heads, alpha=alpha, beta=beta)


def implementations() -> list[Implementation]:
    from normbench.reference import (
        placement_deepnorm,
        placement_post_ln,
        placement_pre_ln,
        placement_sandwich_ln,
    )

    out = []
    for family, factory, ref in (("placement_post_ln", post_ln_block, placement_post_ln),
                                 ("placement_pre_ln", pre_ln_block, placement_pre_ln),
                                 ("placement_sandwich_ln", sandwich_ln_block, placement_sandwich_ln),
                                 ("placement_deepnorm", deepnorm_block, placement_deepnorm)):
        kind = family.removeprefix("placement_")
        # F.scaled_dot_product_attention's fused CPU kernel has no double backward ("derivative for
        # aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"): it raises, as declared.
        out.append(Implementation(name=f"normbench.blocks.{kind}", family=family, factory=factory,
                                  mask_kwarg="pad_mask", tags=("builtin",), double_backward=False))
        out.append(Implementation(name=f"reference.{family}", family=family, factory=ref.build,
                                  mask_kwarg="pad_mask", tags=("reference",)))
    return out
