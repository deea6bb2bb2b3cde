"""The claims lab's speed and memory claims: published claims about norms, re-measured on the machine at hand.

Each claim ends in a verdict that says where it was measured: "holds here" or "does not hold here" (device,
thread count and torch version are in the record), never whether the paper was wrong.

(a) Unified Normalization (Yang et al. 2022, "Unified Normalization for Accelerating and Stabilizing
    Transformers", ACM MM) reports inference 31% faster and 18% less memory than LayerNorm on a GPU, because an
    offline norm (BatchNorm-style: fixed statistics at inference) folds into the adjacent Linear and costs
    nothing. Measured here: a small pre-norm Transformer block (attention + GELU FFN) in inference, once with
    LayerNorm and once with a token BatchNorm (normbench.MaskedBatchNorm, the offline norm of the seed families)
    folded away by `normbench.fold` — the fold tool ships with normbench, so it is always used.
(b) RMSNorm (Zhang & Sennrich 2019, NeurIPS) reports 7%-64% speed-ups over LayerNorm. Measured here: torch's
    torch.nn.RMSNorm against torch.nn.LayerNorm on LLM-like shapes, inference and forward+backward.

Both speed claims are measured per deployment (normbench.deploy): eager (claim ids without suffix), compile
(torch.compile, Inductor; `<id>[compile]`) and export (ONNX Runtime, CPU provider, inference only; `<id>[export]`;
`--variant onnxruntime`, its older name, still selects it), each with its own verdict: eager timings describe
torch's eager kernels, not the code people deploy. Build time (compile, export) is paid before timing and
recorded, never timed.

The training-dynamics claims (PowerNorm, Pre-LN vs Post-LN, DeepNorm) live in normbench.claims.training;
normbench.claims.registry names every claim and runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from normbench import deploy
from normbench.bench.harness import BenchCase, peak_memory_bytes, prepare
from normbench.bench.timer import Timing, measure
from normbench.claims.result import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, ClaimResult


def _interleaved(fns: dict[str, Callable[[], Any]], device: str, repeats: int, budget_s: float) -> dict[str, Timing]:
    """Time each function `repeats` times, alternating between them so that a slow phase of the machine (the CPU
    may be shared) hits every contender alike; the samples of the repeats are pooled."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    iterations: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            timing = measure(fn, device, budget_s=budget_s)
            samples[name] += timing.samples
            iterations[name] = timing.iterations
    return {name: Timing(tuple(s), iterations[name]) for name, s in samples.items()}


def _separated(fast: Timing, slow: Timing) -> bool:
    """`fast` beats `slow` beyond the spread: its third quartile below the other's first."""
    return fast.q3 < slow.q1


# -- (b) RMSNorm versus LayerNorm -------------------------------------------------------------------------

def _claim_id(base: str, variant: str) -> str:
    deployment = deploy.get(variant)
    return base if deployment.default else f"{base}[{deployment.name}]"


def rmsnorm_vs_layernorm(device: str = "cpu", *, tokens: int | None = None, hidden: tuple[int, ...] = (1024, 4096),
                         dtypes: tuple[str, ...] = ("float32", "bfloat16"),
                         passes: tuple[str, ...] = ("inference", "forward+backward"), repeats: int = 2,
                         budget_s: float = 0.25, variant: str = deploy.DEFAULT.name) -> ClaimResult:
    from normbench.builtins import torch_implementations
    from normbench.spec import load_specs

    specs = load_specs(known_checks=None).specs
    impls = {i.name: i for i in torch_implementations()}
    ln, rms = impls["torch.nn.LayerNorm"], impls["torch.nn.RMSNorm"]
    deployment = deploy.get(variant)
    variant = deployment.name
    tokens = tokens or (8192 if torch.device(device).type == "cuda" else 1024)
    cases, ratios, faster, slower = [], [], 0, 0
    skipped: list[str] = []
    build_s: dict[str, float] = {}
    for c in hidden:
        for dtype in dtypes:
            for pass_name in passes:
                if deployment.passes is not None and pass_name not in deployment.passes:
                    skipped.append(f"{pass_name}: {variant} runs inference only")
                    continue
                try:
                    prepared = {impl.name: prepare(BenchCase(impl.family, impl.name, (tokens, c), dtype, pass_name,
                                                             device, variant=variant), impl, specs[impl.family])
                                for impl in (ln, rms)}
                except deploy.DeploymentUnavailable as exc:
                    skipped.append(f"{tokens}x{c} {dtype} {pass_name}: {exc}")
                    continue
                for name, p in prepared.items():
                    build_s[f"{name} {tokens}x{c} {dtype} {pass_name}"] = p.build_s
                t = _interleaved({k: p.fn for k, p in prepared.items()}, device, repeats, budget_s)
                t_ln, t_rms = t[ln.name], t[rms.name]
                ratio = t_ln.median / t_rms.median  # > 1: RMSNorm faster
                ratios.append(ratio)
                faster += _separated(t_rms, t_ln)
                slower += _separated(t_ln, t_rms)
                cases.append({"shape": [tokens, c], "dtype": dtype, "pass": pass_name,
                              "layernorm_median_s": t_ln.median, "layernorm_iqr_s": t_ln.iqr,
                              "rmsnorm_median_s": t_rms.median, "rmsnorm_iqr_s": t_rms.iqr,
                              "rmsnorm_speedup": ratio})
    claim = "RMSNorm is faster than LayerNorm (7%-64% in the paper)"
    source = "Zhang & Sennrich 2019, Root Mean Square Layer Normalization, NeurIPS"
    if not ratios:
        return ClaimResult(_claim_id("rmsnorm_vs_layernorm", variant), claim, source,
                           f"{variant}: no case could be built ({'; '.join(skipped)})", INCONCLUSIVE,
                           str(torch.device(device)), {"variant": variant, "skipped": skipped, "cases": []})
    g = math.exp(sum(map(math.log, ratios)) / len(ratios))
    n = len(ratios)
    if g > 1 and faster > n / 2:
        verdict = HOLDS
    elif g < 1 and slower > n / 2:
        verdict = DOES_NOT_HOLD
    else:
        verdict = INCONCLUSIVE
    speed = f"{g:.2f}x the speed of" if g >= 1 else f"{1 / g:.2f}x slower than"
    measured_passes = sorted({c["pass"] for c in cases}, key=passes.index)
    measured = (f"{deployment.title} RMSNorm is {speed} LayerNorm (geometric mean over {n} cases: {tokens} tokens x "
                f"hidden {'/'.join(map(str, hidden))}, {'/'.join(sorted({c['dtype'] for c in cases}))}, "
                f"{' and '.join(measured_passes)}); faster beyond the spread in {faster} of {n} cases, slower in "
                f"{slower}" + (f"; {len(skipped)} case(s) not buildable" if skipped else ""))
    return ClaimResult(_claim_id("rmsnorm_vs_layernorm", variant), claim, source, measured, verdict,
                       str(torch.device(device)), {"geomean_rmsnorm_speedup": g, "cases": cases, "variant": variant,
                                                   "skipped": skipped, "build_s": build_s})


# -- (a) folded offline norm versus LayerNorm in a Transformer block ---------------------------------------

class PreNormBlock(nn.Module):
    """x + Attn(norm1(x)), then x + FFN(norm2(x)); each norm feeds a Linear directly, so an offline norm folds."""

    def __init__(self, dim: int, heads: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = norm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2, self.fc1, self.fc2 = norm(dim), nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def _offline_norm(dim: int) -> nn.Module:
    from normbench.families.masked_batchnorm import MaskedBatchNorm

    return MaskedBatchNorm(dim)


def _deployed(model: nn.Module, x: torch.Tensor, variant: str) -> tuple[Callable[[], Any], float, dict[str, Any]]:
    """An inference call of `model` on `x` as `variant` deploys it, what building it cost, and what it reported."""
    deployment = deploy.get(variant)
    built = deployment.build(model, x, pass_name="inference")
    call = built.call
    if deployment.inference_only:  # not torch's: no inference mode to enter
        return (lambda: call(x)), built.build_s, built.info

    def fn() -> torch.Tensor:
        with torch.inference_mode():
            return call(x)
    return fn, built.build_s, built.info


def folded_norm_vs_layernorm(device: str = "cpu", *, batch: int = 8, seq: int = 128, dim: int = 256, heads: int = 4,
                             dtype: str = "float32", repeats: int = 2, budget_s: float = 0.5,
                             variant: str = deploy.DEFAULT.name) -> tuple[ClaimResult, ...]:
    """The speed claim, and for the eager variant the memory claim too (peak memory is torch's allocator's; an
    ONNX Runtime session or Inductor's buffers are not comparable with it)."""
    from normbench.fold import fold_with_report

    deployment = deploy.get(variant)
    variant = deployment.name
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    x = torch.randn(batch, seq, dim, device=device, dtype=dt)
    layernorm = PreNormBlock(dim, heads, nn.LayerNorm).to(device=device, dtype=dt).eval()
    offline = PreNormBlock(dim, heads, _offline_norm).to(device=device, dtype=dt)
    offline.train()
    with torch.no_grad():  # give the offline norm real running statistics, as after training
        for _ in range(20):
            offline(torch.randn(batch, seq, dim, device=device, dtype=dt) * 2 + 0.5)
    offline.eval()
    folded, report = fold_with_report(offline, x)
    if len(report.folded) != 2:
        raise RuntimeError(f"expected both offline norms folded, fold reported {report.folded} / {report.kept}")
    models = {"layernorm": layernorm, "offline_unfolded": offline, "offline_folded": folded}
    source = "Yang et al. 2022, Unified Normalization for Accelerating and Stabilizing Transformers, ACM MM (GPU)"
    claim = "A folded offline norm makes Transformer inference 31% faster than LayerNorm"
    fns: dict[str, Callable[[], Any]] = {}
    build_s: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    onnx_ops: dict[str, list[str]] = {}
    for name, model in models.items():
        try:
            fns[name], build_s[name], info = _deployed(model, x, variant)
        except deploy.DeploymentUnavailable as exc:
            unavailable[name] = str(exc)
            continue
        if "onnx_ops" in info:
            onnx_ops[name] = info["onnx_ops"]
    if "layernorm" not in fns or "offline_folded" not in fns:
        return (ClaimResult(_claim_id("folded_norm_speed", variant), claim, source,
                            f"{variant}: the blocks cannot be built: {unavailable}", INCONCLUSIVE,
                            str(torch.device(device)), {"variant": variant, "unavailable": unavailable}),)
    t = _interleaved(fns, device, repeats, budget_s)
    peaks = {name: peak_memory_bytes(fn, device) for name, fn in fns.items()} if deployment.default else {}
    t_ln, t_fold = t["layernorm"], t["offline_folded"]
    saved = 1 - t_fold.median / t_ln.median
    details = {"block": {"batch": batch, "seq": seq, "dim": dim, "heads": heads, "dtype": dtype, "ffn": 4 * dim},
               "folded": [str(s) for s in report.folded], "fold_verified_rel_error": report.verified_rel_error,
               **{f"{k}_median_s": v.median for k, v in t.items()}, **{f"{k}_iqr_s": v.iqr for k, v in t.items()},
               **{f"{k}_peak_mem_bytes": v for k, v in peaks.items()}, "variant": variant, "build_s": build_s,
               "unavailable": unavailable, "onnx_ops": onnx_ops}
    unfolded = t.get("offline_unfolded")
    if _separated(t_fold, t_ln):
        verdict = HOLDS if saved >= 0.31 / 2 else f"{HOLDS} in direction only ({saved:.0%} vs the paper's 31%)"
    elif saved > 0 and not _separated(t_ln, t_fold):
        # faster by the medians but inside the spread (a loaded machine): neither verdict is earned
        verdict = f"{INCONCLUSIVE} (folded faster by the medians, inside the spread)"
    else:
        verdict = DOES_NOT_HOLD
    unfolded_text = (f"unfolded offline norm {unfolded.median * 1e3:.3f} ms" if unfolded is not None
                     else f"unfolded offline norm not buildable: {unavailable.get('offline_unfolded')}")
    speed = ClaimResult(
        _claim_id("folded_norm_speed", variant), claim, source,
        f"{variant}: folded block {saved:+.1%} time saved vs the LayerNorm block (medians "
        f"{t_fold.median * 1e3:.3f} vs {t_ln.median * 1e3:.3f} ms, IQR {t_fold.iqr * 1e3:.3f} / "
        f"{t_ln.iqr * 1e3:.3f} ms; {unfolded_text}); block dim {dim}, {heads} heads, {batch}x{seq} tokens, "
        f"{dtype}", verdict, str(torch.device(device)), details)
    if not deployment.default:
        return (speed,)
    p_ln, p_fold = peaks["layernorm"], peaks["offline_folded"]
    less = 1 - p_fold / p_ln if p_ln and p_fold is not None else 0.0
    memory_verdict = (HOLDS if less >= 0.18 / 2 else f"{HOLDS} in direction only ({less:.0%} vs the paper's 18%)") \
        if less > 0 else DOES_NOT_HOLD
    memory = ClaimResult(
        "folded_norm_memory", "A folded offline norm needs 18% less inference memory than LayerNorm",
        "Yang et al. 2022, Unified Normalization for Accelerating and Stabilizing Transformers, ACM MM (GPU)",
        f"peak memory of one inference call: folded {(p_fold or 0) / 2**20:.2f} MiB vs LayerNorm "
        f"{(p_ln or 0) / 2**20:.2f} MiB ({less:+.1%} less)", memory_verdict, str(torch.device(device)), details)
    return speed, memory
