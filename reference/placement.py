"""Residual placement of LayerNorm in a Transformer block: Post-LN, Pre-LN, Sandwich-LN and DeepNorm.

A placement is not a norm but a way of wiring one around a sublayer F; the suite judges it as a family of
*blocks* x ↦ block(x), (B, T, C) → (B, T, C), each with two sublayers, self-attention then a feed-forward
network (GELU, hidden 2C), so that DeepNorm's "scale v and out, not q and k" is visible:

    Post-LN (Vaswani et al. 2017)        x ← LN(x + F(x))
    Pre-LN (Xiong et al. 2020)           x ← x + F(LN(x))
    Sandwich-LN (Ding et al. 2021)       x ← x + LN(F(LN(x)))
    DeepNorm (Wang et al. 2022)          x ← LN(α·x + F(x)), with the weights of the FFN, the value and the
                                         attention output projections scaled by β at initialization

The parameter contract (what an implementation must expose so the suite can give the reference the very
same weights): flat attributes w_q, w_k, w_v, w_o (C×C, no bias on q, k, v), b_o (C), w_ff1 (2C×C), b_ff1
(2C), w_ff2 (C×2C), b_ff2 (C), all in the torch Linear convention y = x·Wᵀ + b; `weight` and `bias` of shape
(L, C) hold the L LayerNorms' γ and β in the order they are applied (Post-LN, Pre-LN, DeepNorm: L = 2;
Sandwich: L = 4, pre- then post-norm of attention, then of the FFN). Heads split C into contiguous slices.

Padding: pad_mask (B, T), True = pad, masks pad keys out of attention. Pad rows are set to 0 before anything
else, so NaN / inf pads reach no real token (0·NaN in the attention average would) and outputs at pads are
those of a zero token. Causal masking and cross-attention are outside the block: they do not move the norm.

DeepNorm coefficients (paper, Table 1 / Figure 2): encoder-only α = (2N)^¼, β = (8N)^-¼; decoder-only
α = (2M)^¼, β = (8M)^-¼; encoder-decoder, encoder α = 0.81·(N⁴M)^(1/16), β = 0.87·(N⁴M)^(-1/16), decoder
α = (3M)^¼, β = (12M)^-¼. The authors' torchscale code divides the encoder's weights by
(N⁴M)^(1/16) / 1.15, i.e. β = 1.15·(N⁴M)^(-1/16): 1.15 ≈ 1/0.87, one of the two constants is inverted.
We follow the paper (0.87); `deepnorm_coefficients(..., encoder_beta_constant=1.15)` gives torchscale's.
β scales weights only: the paper's pseudo-code passes it as the xavier gain of those weights. torchscale divides
every parameter whose name holds fc1 / fc2 / out_proj / v_proj, biases included; our biases start at 0, where
that division changes nothing.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Placement = Literal["post_ln", "pre_ln", "sandwich_ln", "deepnorm"]
PLACEMENTS: tuple[str, ...] = ("post_ln", "pre_ln", "sandwich_ln", "deepnorm")
#: how many LayerNorms each placement applies per block (two sublayers).
NORMS_PER_BLOCK = {"post_ln": 2, "pre_ln": 2, "sandwich_ln": 4, "deepnorm": 2}
#: the projection weights DeepNorm scales by β at initialization (not w_q, w_k).
BETA_SCALED = ("w_v", "w_o", "w_ff1", "w_ff2")
PAPER_ENCODER_BETA = 0.87
TORCHSCALE_ENCODER_BETA = 1.15


def deepnorm_coefficients(encoder_layers: int, decoder_layers: int, decoder_block: bool,
                          encoder_beta_constant: float = PAPER_ENCODER_BETA) -> tuple[float, float]:
    """(α, β) of DeepNorm for a block of the encoder (decoder_block False) or decoder of an architecture
    with N = encoder_layers and M = decoder_layers (0 where that stack is absent)."""
    n, m = encoder_layers, decoder_layers
    if n < 0 or m < 0 or n + m == 0:
        raise ValueError(f"DeepNorm needs layer counts >= 0, not both 0; got N={n}, M={m}")
    if n > 0 and m > 0:
        if decoder_block:
            return (3 * m) ** 0.25, (12 * m) ** -0.25
        return 0.81 * (n**4 * m) ** (1 / 16), encoder_beta_constant * (n**4 * m) ** (-1 / 16)
    if decoder_block != (m > 0):
        stack = "decoder" if decoder_block else "encoder"
        raise ValueError(f"a {stack} block needs {stack}_layers > 0; got N={n}, M={m}")
    layers = m if decoder_block else n
    return (2 * layers) ** 0.25, (8 * layers) ** -0.25


class PlacementBlockReference(nn.Module):
    def __init__(self, num_features: int, placement: Placement, eps: float = 1e-5, affine: bool = True,
                 num_heads: int = 2, encoder_layers: int = 0, decoder_layers: int = 0,
                 decoder_block: bool = False) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; choose from {PLACEMENTS}")
        if num_features % num_heads:
            raise ValueError(f"num_features={num_features} is not divisible by num_heads={num_heads}")
        c, hidden = num_features, 2 * num_features
        self.placement = placement
        self.num_features = c
        self.eps = eps
        self.num_heads = num_heads
        if placement == "deepnorm":
            self.alpha, self.beta = deepnorm_coefficients(encoder_layers, decoder_layers, decoder_block)
        else:
            self.alpha, self.beta = 1.0, 1.0
        shapes = {"w_q": (c, c), "w_k": (c, c), "w_v": (c, c), "w_o": (c, c), "w_ff1": (hidden, c),
                  "w_ff2": (c, hidden)}
        for name, shape in shapes.items():
            # xavier-normal with gain β on the β-scaled weights (the paper's pseudo-code), 1 elsewhere.
            gain = self.beta if name in BETA_SCALED else 1.0
            std = gain * math.sqrt(2.0 / (shape[0] + shape[1]))
            setattr(self, name, nn.Parameter(torch.randn(shape, dtype=torch.float64) * std))
        for name, size in (("b_o", c), ("b_ff1", hidden), ("b_ff2", c)):
            setattr(self, name, nn.Parameter(torch.zeros(size, dtype=torch.float64)))
        norms = NORMS_PER_BLOCK[placement]
        if affine:
            self.weight = nn.Parameter(torch.ones(norms, c, dtype=torch.float64))
            self.bias = nn.Parameter(torch.zeros(norms, c, dtype=torch.float64))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def _p(self, name: str) -> torch.Tensor:
        return getattr(self, name).to(torch.float64)

    def _norm(self, h: torch.Tensor, index: int) -> torch.Tensor:
        mean = h.mean(dim=-1, keepdim=True)
        centred = h - mean
        y = centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + self.eps)
        if self.weight is None:
            return y
        return y * self._p("weight")[index] + self._p("bias")[index]

    def _attention(self, h: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = h.shape
        d = c // self.num_heads

        def heads(w: str) -> torch.Tensor:
            return (h @ self._p(w).T).reshape(b, t, self.num_heads, d).transpose(1, 2)

        q, k, v = heads("w_q"), heads("w_k"), heads("w_v")
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[:, None, None, :], float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return out.transpose(1, 2).reshape(b, t, c) @ self._p("w_o").T + self._p("b_o")

    def _ffn(self, h: torch.Tensor) -> torch.Tensor:
        u = h @ self._p("w_ff1").T + self._p("b_ff1")
        u = 0.5 * u * (1.0 + torch.erf(u / math.sqrt(2.0)))  # exact GELU
        return u @ self._p("w_ff2").T + self._p("b_ff2")

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"expected a (B, T, C) input, got shape {tuple(x.shape)}")
        h = x.to(torch.float64)
        mask = None
        if pad_mask is not None:
            mask = pad_mask.to(torch.bool)
            h = h.masked_fill(mask.unsqueeze(-1), 0.0)
        sublayers = (lambda z: self._attention(z, mask), self._ffn)
        for i, f in enumerate(sublayers):
            if self.placement in ("post_ln", "deepnorm"):
                h = self._norm(self.alpha * h + f(h), i)
            elif self.placement == "pre_ln":
                h = h + f(self._norm(h, i))
            else:  # sandwich_ln
                h = h + self._norm(f(self._norm(h, 2 * i)), 2 * i + 1)
        return h.to(x.dtype)


def build(num_features: int, placement: Placement, **params: object) -> nn.Module:
    return PlacementBlockReference(num_features, placement, **params)  # type: ignore[arg-type]
