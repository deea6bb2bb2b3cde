"""The claims lab's training-dynamics claims, at CPU scale: small seeded models, a few hundred steps, minutes in all.

(c) PowerNorm (Shen et al. 2020, "PowerNorm: Rethinking Batch Normalization in Transformers", ICML): BatchNorm's
    batch statistics fluctuate far more around its running statistics in a Transformer on text than in a CNN on
    images (their Figure 2). Measured here: a small CNN on synthetic class-patterned images and a small
    Transformer on Zipf-distributed token sequences of varying length (padding excluded from the statistics),
    both with BatchNorm, trained with Adam; per step and BN layer, the deviation of the batch mean from the
    running mean (in running standard deviations) and of the batch variance from the running variance (relative).
(d) Xiong et al. 2020 ("On Layer Normalization in the Transformer Architecture", ICML): at initialization the
    gradient norms of the layers' weights are flat across depth for Pre-LN and grow toward the output for Post-LN
    (their Figure 3). Measured here: per-layer Frobenius norm of the gradient of the FFN output weight, averaged
    over seeds, for a Pre-LN and a Post-LN encoder of the same size.
(e) DeepNet (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers"): DeepNorm (x·α + f(x) before the
    LayerNorm, α = (2N)^¼, the FFN / value / output weights initialised ×β = (8N)^-¼) keeps a deep Post-LN stack
    trainable where plain Post-LN diverges. Measured here: the same Post-LN encoder with and without DeepNorm,
    trained without warm-up at a learning rate Post-LN is known to dislike, at increasing depths.

Every function takes its sizes as arguments (the tests run them tiny) and records, in `details.plot`, the curves
the leaderboard draws. Verdicts compare the numbers with thresholds fixed here, before any run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from normbench.claims.result import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, ClaimResult

#: (c) the Transformer's deviations must be at least this many times the CNN's
POWERNORM_FACTOR = 2.0
#: (d) Post-LN "grows toward the output": last layer's gradient norm over the first's at least this
POSTLN_GROWTH = 2.0
#: (d) Pre-LN "flat": largest over smallest layer gradient norm at most this
PRELN_FLATNESS = 2.0
#: (e) a run "trains" when its final loss is below this fraction of its initial loss, and is finite
TRAINED_FRACTION = 0.8


# -- shared pieces -----------------------------------------------------------------------------------------------

def _zipf_tokens(gen: torch.Generator, batch: int, seq: int, vocab: int, min_len: int) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """Token ids with a Zipf(1) frequency (text-like) following a fixed random bigram shift, and a padding mask
    (True = real token) of lengths uniform in [min_len, seq]."""
    ranks = torch.arange(1, vocab, dtype=torch.float64)
    probs = (1.0 / ranks) / (1.0 / ranks).sum()
    first = torch.multinomial(probs, batch * seq, replacement=True, generator=gen).view(batch, seq) + 1
    # a learnable structure: every second token is a fixed function of the one before
    tokens = first.clone()
    tokens[:, 1::2] = (first[:, 0::2][:, : tokens[:, 1::2].shape[1]] * 7) % (vocab - 1) + 1
    lengths = torch.randint(min_len, seq + 1, (batch,), generator=gen)
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    return tokens.masked_fill(~mask, 0), mask


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, c // self.heads).transpose(1, 2)

        attn_mask = mask[:, None, None, :] if mask is not None else None
        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, t, c))


class _FFN(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


# -- (c) PowerNorm: batch statistics in a Transformer vs a CNN ---------------------------------------------------

class _TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the real (unpadded) tokens of a (batch, seq, C) input, as PowerNorm's Transformer uses it."""

    mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = self.mask if self.mask is not None else torch.ones(x.shape[:2], dtype=torch.bool)
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


class _BNTransformer(nn.Module):
    def __init__(self, vocab: int, dim: int, heads: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(256, dim) * 0.02)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            self.blocks.append(nn.ModuleDict({"attn": _Attention(dim, heads), "n1": _TokenBatchNorm(dim),
                                              "ffn": _FFN(dim), "n2": _TokenBatchNorm(dim)}))
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for blk in self.blocks:
            blk["n1"].mask = blk["n2"].mask = mask
            x = blk["n1"](x + blk["attn"](x, mask))  # Post-norm, as in the paper's Transformer with BN
            x = blk["n2"](x + blk["ffn"](x))
        return self.head(x)


class _BNCNN(nn.Module):
    def __init__(self, classes: int, width: int) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                       nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _watch_batch_statistics(model: nn.Module) -> tuple[dict[str, list[tuple[float, float]]], list[Any]]:
    """Forward pre-hooks on every BatchNorm: per call, (batch mean deviation from the running mean in running
    standard deviations, |batch variance / running variance - 1|), averaged over channels, before the update."""
    log: dict[str, list[tuple[float, float]]] = {}
    handles = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm) or not mod.training:
            continue
        log[name] = []

        def hook(m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            x = args[0].detach()
            if isinstance(m, _TokenBatchNorm):
                mask = m.mask if m.mask is not None else torch.ones(x.shape[:2], dtype=torch.bool)
                flat = x[mask]
            else:
                flat = x.transpose(0, 1).reshape(x.shape[1], -1).t()
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            run_mean, run_var = m.running_mean, m.running_var
            d_mean = ((mean - run_mean).abs() / (run_var + m.eps).sqrt()).mean().item()
            d_var = ((var + m.eps) / (run_var + m.eps) - 1).abs().mean().item()
            log[name].append((d_mean, d_var))
        handles.append(mod.register_forward_pre_hook(hook))
    return log, handles


def _images(gen: torch.Generator, batch: int, classes: int, size: int,
            patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.randint(0, classes, (batch,), generator=gen)
    x = patterns[labels] + 0.5 * torch.randn(batch, 3, size, size, generator=gen)
    return x, labels


def powernorm_batch_statistics(device: str = "cpu", *, steps: int = 300, batch: int = 32, seq: int = 32,
                               vocab: int = 256, dim: int = 64, heads: int = 4, layers: int = 2, image: int = 16,
                               width: int = 16, classes: int = 8, seed: int = 0, lr: float = 1e-3) -> ClaimResult:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    transformer = _BNTransformer(vocab, dim, heads, layers).to(device)
    cnn = _BNCNN(classes, width).to(device)
    patterns = torch.randn(classes, 3, image, image, generator=gen)
    patterns = F.avg_pool2d(patterns, 3, stride=1, padding=1)  # smooth, image-like class patterns
    logs = {}
    losses: dict[str, list[float]] = {"transformer": [], "cnn": []}
    for kind, model in (("transformer", transformer), ("cnn", cnn)):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        log, handles = _watch_batch_statistics(model)
        model.train()
        for _ in range(steps):
            if kind == "transformer":
                tokens, mask = _zipf_tokens(gen, batch, seq, vocab, seq // 4)
                logits = model(tokens.to(device), mask.to(device))
                # next-token prediction on the real tokens
                loss = F.cross_entropy(logits[:, :-1][mask[:, 1:]], tokens[:, 1:][mask[:, 1:]].to(device))
            else:
                x, y = _images(gen, batch, classes, image, patterns)
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[kind].append(loss.item())
        for h in handles:
            h.remove()
        logs[kind] = log
    # the running statistics need a few dozen steps to exist: the second half of training is compared
    half = steps // 2

    def summary(log: dict[str, list[tuple[float, float]]]) -> tuple[float, float, list[tuple[float, float]]]:
        per_step = [(sum(v[i][0] for v in log.values()) / len(log), sum(v[i][1] for v in log.values()) / len(log))
                    for i in range(steps)]
        tail = per_step[half:]
        return sum(p[0] for p in tail) / len(tail), sum(p[1] for p in tail) / len(tail), per_step

    t_mean, t_var, t_curve = summary(logs["transformer"])
    c_mean, c_var, c_curve = summary(logs["cnn"])
    r_mean, r_var = t_mean / max(c_mean, 1e-12), t_var / max(c_var, 1e-12)
    if r_mean >= POWERNORM_FACTOR and r_var >= POWERNORM_FACTOR:
        verdict = HOLDS
    elif r_mean < 1 and r_var < 1:
        verdict = DOES_NOT_HOLD
    else:
        verdict = INCONCLUSIVE if min(r_mean, r_var) < POWERNORM_FACTOR and max(r_mean, r_var) >= 1 else HOLDS
    measured = (f"second half of {steps} Adam steps: batch-mean deviation {t_mean:.3f} (Transformer) vs "
                f"{c_mean:.3f} (CNN) running std = {r_mean:.1f}x; batch-variance deviation {t_var:.3f} vs "
                f"{c_var:.3f} = {r_var:.1f}x (threshold {POWERNORM_FACTOR:g}x for both); {layers}-layer d={dim} "
                f"Post-LN Transformer with token BatchNorm on Zipf tokens (lengths {seq // 4}-{seq}, padding "
                f"excluded) vs a 3-conv BN CNN on {image}x{image} patterned images; final losses "
                f"{losses['transformer'][-1]:.2f} / {losses['cnn'][-1]:.2f}; {time.perf_counter() - started:.0f} s")
    stride = max(1, steps // 100)
    plot = {"x_label": "training step", "y_label": "deviation (averaged over BN layers and channels)",
            "log_y": True, "panels": {
                "|batch mean - running mean| / running std": {
                    "Transformer (token BN)": [(i, t_curve[i][0]) for i in range(0, steps, stride)],
                    "CNN (BN2d)": [(i, c_curve[i][0]) for i in range(0, steps, stride)]},
                "|batch var / running var - 1|": {
                    "Transformer (token BN)": [(i, t_curve[i][1]) for i in range(0, steps, stride)],
                    "CNN (BN2d)": [(i, c_curve[i][1]) for i in range(0, steps, stride)]}}}
    return ClaimResult(
        "powernorm_batch_statistics",
        "BatchNorm's batch statistics fluctuate far more in a Transformer than in a CNN",
        "Shen et al. 2020, PowerNorm: Rethinking Batch Normalization in Transformers, ICML (Figure 2)",
        measured, verdict, str(torch.device(device)),
        {"transformer_mean_dev": t_mean, "transformer_var_dev": t_var, "cnn_mean_dev": c_mean, "cnn_var_dev": c_var,
         "ratio_mean": r_mean, "ratio_var": r_var, "steps": steps, "seed": seed, "plot": plot,
         "final_loss": {k: v[-1] for k, v in losses.items()}})


# -- (d) Pre-LN vs Post-LN gradient norms at initialization ---------------------------------------------------

class _Encoder(nn.Module):
    """An encoder of `layers` blocks: "pre" (x + f(LN(x)), final LN), "post" (LN(x + f(x))) or "deepnorm"
    (LN(α·x + f(x)), α = (2N)^¼, FFN / value / output projections initialised ×β = (8N)^-¼, Wang et al. 2022)."""

    def __init__(self, vocab: int, dim: int, heads: int, layers: int, placement: str) -> None:
        super().__init__()
        if placement not in ("pre", "post", "deepnorm"):
            raise ValueError(f"placement {placement!r}: expected pre, post or deepnorm")
        self.placement = placement
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(256, dim) * 0.02)
        self.attn = nn.ModuleList(_Attention(dim, heads) for _ in range(layers))
        self.ffn = nn.ModuleList(_FFN(dim) for _ in range(layers))
        self.n1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.n2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.final = nn.LayerNorm(dim) if placement == "pre" else nn.Identity()
        self.head = nn.Linear(dim, vocab)
        for lin in [*(m for a in self.attn for m in (a.q, a.k, a.v, a.out)), *(m for f in self.ffn
                                                                               for m in (f.fc1, f.fc2))]:
            nn.init.xavier_normal_(lin.weight)  # Xiong et al.'s initialisation
            nn.init.zeros_(lin.bias)
        self.alpha = (2 * layers) ** 0.25 if placement == "deepnorm" else 1.0
        if placement == "deepnorm":
            beta = (8 * layers) ** -0.25
            with torch.no_grad():
                for a, f in zip(self.attn, self.ffn):
                    for lin in (a.v, a.out, f.fc1, f.fc2):
                        lin.weight.mul_(beta)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for attn, ffn, n1, n2 in zip(self.attn, self.ffn, self.n1, self.n2):
            if self.placement == "pre":
                x = x + attn(n1(x))
                x = x + ffn(n2(x))
            else:
                x = n1(self.alpha * x + attn(x))
                x = n2(self.alpha * x + ffn(x))
        return self.head(self.final(x))


def layer_gradient_norms(placement: str, *, layers: int, dim: int, heads: int, vocab: int, batch: int, seq: int,
                         seed: int) -> list[float]:
    """Per-layer ||dL/dW|| of the FFN output weight at initialization, for one seeded batch."""
    torch.manual_seed(seed)
    model = _Encoder(vocab, dim, heads, layers, placement)
    gen = torch.Generator().manual_seed(seed + 1000)
    tokens = torch.randint(0, vocab, (batch, seq), generator=gen)
    targets = torch.randint(0, vocab, (batch, seq), generator=gen)
    loss = F.cross_entropy(model(tokens).reshape(-1, vocab), targets.reshape(-1))
    loss.backward()
    return [float(f.fc2.weight.grad.norm()) for f in model.ffn]


def prenorm_postnorm_gradients(device: str = "cpu", *, layers: int = 12, dim: int = 64, heads: int = 4,
                               vocab: int = 256, batch: int = 16, seq: int = 32, seeds: int = 5) -> ClaimResult:
    started = time.perf_counter()
    norms = {}
    for placement in ("pre", "post"):
        runs = [layer_gradient_norms(placement, layers=layers, dim=dim, heads=heads, vocab=vocab, batch=batch,
                                     seq=seq, seed=s) for s in range(seeds)]
        norms[placement] = [sum(r[i] for r in runs) / seeds for i in range(layers)]
    pre, post = norms["pre"], norms["post"]
    post_growth = post[-1] / post[0]
    pre_flat = max(pre) / min(pre)
    grows, flat = post_growth >= POSTLN_GROWTH, pre_flat <= PRELN_FLATNESS
    verdict = HOLDS if grows and flat else (DOES_NOT_HOLD if not grows and not flat else INCONCLUSIVE)
    measured = (f"gradient norm of the FFN output weight at init, layer 1 -> {layers} (mean of {seeds} seeds): "
                f"Post-LN {post[0]:.3g} -> {post[-1]:.3g} ({post_growth:.1f}x, grows if >= {POSTLN_GROWTH:g}x), "
                f"Pre-LN {pre[0]:.3g} -> {pre[-1]:.3g} (max/min over layers {pre_flat:.2f}, flat if <= "
                f"{PRELN_FLATNESS:g}); d={dim}, {heads} heads, {batch}x{seq} random tokens, Xavier init; "
                f"{time.perf_counter() - started:.0f} s")
    plot = {"x_label": "layer (1 = next to the input)", "y_label": "||dL/dW_fc2|| at initialization", "log_y": True,
            "panels": {f"{layers}-layer encoder, d={dim}": {
                "Post-LN": [(i + 1, v) for i, v in enumerate(post)],
                "Pre-LN": [(i + 1, v) for i, v in enumerate(pre)]}}}
    return ClaimResult(
        "prenorm_postnorm_gradients",
        "At initialization, Post-LN gradient norms grow toward the output; Pre-LN ones are flat across layers",
        "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture, ICML (Figure 3)",
        measured, verdict, str(torch.device(device)),
        {"post_ln": post, "pre_ln": pre, "post_growth": post_growth, "pre_max_over_min": pre_flat,
         "layers": layers, "seeds": seeds, "plot": plot})


# -- (e) DeepNorm keeps deep Post-LN trainable ---------------------------------------------------------------

def train_curve(placement: str, *, layers: int, steps: int, dim: int, heads: int, vocab: int, batch: int, seq: int,
                lr: float, seed: int, deadline: float | None = None) -> list[float]:
    """Losses of `steps` Adam steps (no warm-up) on a learnable synthetic next-token task; stops at the first
    non-finite loss (it is the last value) or at `deadline` (perf_counter)."""
    torch.manual_seed(seed)
    model = _Encoder(vocab, dim, heads, layers, placement)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    losses: list[float] = []
    for _ in range(steps):
        tokens, mask = _zipf_tokens(gen, batch, seq, vocab, seq)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        losses.append(loss.item())
        if not math.isfinite(losses[-1]) or (deadline is not None and time.perf_counter() > deadline):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def trained(losses: list[float], window: int = 10) -> bool:
    """Finite throughout, and the last `window` steps' mean loss below TRAINED_FRACTION of the first ones'."""
    if not losses or not all(math.isfinite(v) for v in losses) or len(losses) < 2 * window:
        return False
    first = sum(losses[:window]) / window
    last = sum(losses[-window:]) / window
    return last < TRAINED_FRACTION * first


def deepnorm_depth(device: str = "cpu", *, depths: tuple[int, ...] = (6, 12, 24, 48, 96), steps: int = 200,
                   dim: int = 64, heads: int = 4, vocab: int = 64, batch: int = 16, seq: int = 16, lr: float = 1e-3,
                   seed: int = 0, budget_s: float = 300.0, train: Callable[..., list[float]] = train_curve
                   ) -> ClaimResult:
    """Train Post-LN and DeepNorm at each depth, smallest first, while the time budget lasts."""
    started = time.perf_counter()
    results: dict[int, dict[str, Any]] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    for depth in depths:
        if results and time.perf_counter() - started > budget_s / 2:
            break  # the next depth costs about twice the last: stop while it still fits the budget
        row: dict[str, Any] = {}
        for placement in ("post", "deepnorm"):
            losses = train(placement, layers=depth, steps=steps, dim=dim, heads=heads, vocab=vocab, batch=batch,
                           seq=seq, lr=lr, seed=seed, deadline=started + budget_s * 2)
            window = min(10, len(losses))
            row[placement] = {"trained": trained(losses), "first": sum(losses[:window]) / window,
                              "last": sum(losses[-window:]) / window, "steps": len(losses),
                              "finite": all(math.isfinite(v) for v in losses)}
            label = f"{'Post-LN' if placement == 'post' else 'DeepNorm'} N={depth}"
            curves[label] = [(i, v if math.isfinite(v) else float("nan")) for i, v in enumerate(losses)]
        results[depth] = row
    deepest = max(results)
    where = [d for d, r in results.items() if r["deepnorm"]["trained"] and not r["post"]["trained"]]
    both_fail = [d for d, r in results.items() if not r["deepnorm"]["trained"]]
    if where:
        verdict = HOLDS
    elif both_fail:
        verdict = DOES_NOT_HOLD
    else:
        verdict = INCONCLUSIVE  # both train at every depth tried: Post-LN never failed here
    table = "; ".join(f"N={d}: Post-LN {'trains' if r['post']['trained'] else 'fails'} ({r['post']['first']:.2f} -> "
                      f"{r['post']['last']:.2f}), DeepNorm {'trains' if r['deepnorm']['trained'] else 'fails'} "
                      f"({r['deepnorm']['first']:.2f} -> {r['deepnorm']['last']:.2f})" for d, r in results.items())
    measured = (f"{table}. Adam lr {lr:g}, no warm-up, {steps} steps, d={dim}, {batch}x{seq} Zipf tokens; trains = "
                f"finite and final loss < {TRAINED_FRACTION:g}x initial; deepest depth that fit the "
                f"{budget_s:.0f} s budget: {deepest}; {time.perf_counter() - started:.0f} s")
    plot = {"x_label": "training step", "y_label": "training loss", "log_y": False,
            "panels": {"Post-LN vs DeepNorm (no warm-up)": curves}}
    return ClaimResult(
        "deepnorm_depth", "DeepNorm keeps a deep Post-LN Transformer trainable where plain Post-LN diverges",
        "Wang et al. 2022, DeepNet: Scaling Transformers to 1,000 Layers", measured, verdict,
        str(torch.device(device)),
        {"depths": {str(d): r for d, r in results.items()}, "deepest": deepest, "holds_at": where, "lr": lr,
         "steps": steps, "seed": seed, "plot": plot})
