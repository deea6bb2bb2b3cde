"""Comparisons a check turns into a verdict: the bound on two outputs of one module, a trial from named
comparisons, and the affine gradients against the reference's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from normbench.checks.base import CheckContext
from normbench.checks.toolkit.search import Trial
from normbench.compare import Comparison, TermScale, compare
from normbench.spec import Tolerance


def doubled(tol: Tolerance, extra_abs: float = 0.0) -> Tolerance:
    """The bound on the difference of two outputs each within `tol` of the truth, plus `extra_abs` in
    units of eps(dtype)·S (the compare() convention for the abs term)."""
    return Tolerance(rel=2 * tol.rel, abs=2 * tol.abs + extra_abs, red=2 * tol.red)


def comparisons_trial(ctx: CheckContext, comparisons: dict[str, Comparison], counterexample: dict[str, Any],
                      extra_metrics: dict[str, Any] | None = None, skipped: Sequence[str] = ()) -> Trial:
    """A Trial from named comparisons: ok when all are; metrics of every one; the worst summarized."""
    metrics: dict[str, Any] = dict(extra_metrics or {})
    metrics["measured"] = len(comparisons)
    if skipped:
        metrics["not_measurable"] = list(skipped)
    if not comparisons:
        return Trial(ok=True, summary="nothing measurable: " + "; ".join(skipped), metrics=metrics,
                     counterexample=counterexample)
    name, worst = max(comparisons.items(), key=lambda kv: kv[1].tol_ratio)
    # Worst first: the summary leads with the clearest evidence.
    failing = sorted((k for k, c in comparisons.items() if not c.ok), key=lambda k: -comparisons[k].tol_ratio)
    text = "; ".join(comparisons[k].describe(k) for k in failing) or worst.describe(name)
    if failing:
        counterexample = {**counterexample, "failing": failing}
    metrics.update({"tol_ratio": worst.tol_ratio, "worst": name, "max_abs": worst.max_abs,
                    "max_rel": worst.max_rel, "max_ulp": worst.max_ulp})
    for key, comp in comparisons.items():
        metrics[f"{key}.max_abs"] = comp.max_abs
        metrics[f"{key}.tol_ratio"] = comp.tol_ratio
    return Trial(ok=not failing, summary=text, metrics=metrics, counterexample=counterexample)


def affine_gradient_comparisons(ctx: CheckContext, module: nn.Module, ref: nn.Module, reduction_length: int,
                                kind: str = "backward", require: bool = False,
                                terms: dict[str, TermScale] | None = None) -> dict[str, Comparison]:
    """dγ and dβ of `module` against the reference's, for each one the reference has. A parameter that got no
    gradient is compared as zeros, or, with `require`, raises (the item then reports an error naming it).
    `terms` (by label) scales a bound by what the reduction sums (see compare)."""
    terms = terms or {}
    weight, bias = ctx.impl.affine_tensors(module)
    comparisons: dict[str, Comparison] = {}
    for label, got, want in (("grad_weight", weight, getattr(ref, "weight", None)),
                             ("grad_bias", bias, getattr(ref, "bias", None))):
        if want is None or want.grad is None:
            continue
        if got is None or got.grad is None:
            if require:
                raise AssertionError(f"{label}: no gradient reached the module's parameter")
            got_grad = torch.zeros_like(want.grad)
        else:
            got_grad = got.grad
        comparisons[label] = compare(got_grad, want.grad, ctx.dtype, ctx.tolerance(kind), reduction_length,
                                     terms=terms.get(label))
    return comparisons
