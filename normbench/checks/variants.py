"""Properties of the deployment variants themselves, planned only under their variant.

- variant_matches_eager (compile, export): the deployed module computes what the eager one does, within the
  family's tolerance, with the ulp distance reported (and whether it is bitwise).
- no_recompile_storm (compile): across the shapes the suite draws, Inductor compiles once per shape class.
- export_train_eval_semantics (export): an eval-mode export is the folded per-channel affine map of the
  running statistics; a train-mode export of a batch-statistic norm is refused, or, if it exports, computes the
  batch statistics.
- export_ops (export, report): the ONNX op set of the exported graph (a fused LayerNormalization op or a
  decomposition into primitives).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from normbench.checks.base import CheckContext, Observation, Skip, register_check
from normbench.checks.folding import per_channel_affine
from normbench.checks.toolkit.reductions import reduction_length
from normbench.compare import Comparison, compare
from normbench.deploy import COMPILE, EAGER, EXPORT, DeploymentUnavailable, base_class
from normbench.deploy.compile import compiled_forward, compiler_guarded
from normbench.deploy.export import last_export
from normbench.inputs import Case, input_shape
from normbench.remote.proxy import RemoteModule

#: the ONNX ops that are a whole normalization (the alternative is a decomposition into Reduce*/Pow/Sqrt/...)
ONNX_NORM_OPS = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "BatchNormalization",
                 "InstanceNormalization", "GroupNormalization", "SkipLayerNormalization")

#: graphs a compiled module may add after the first call of a shape class (dynamic=True may specialise once,
#: e.g. on a first size that differs from the example); more is a recompilation storm
RECOMPILE_BOUND = 1
#: batch / sequence sizes drawn for the recompile count: several per shape class, none 0 or 1 (which
#: torch.compile specialises by design)
STORM_SIZES = (2, 3, 5, 6, 9, 13)


def _cases(ctx: CheckContext) -> list[Case]:
    """A bounded set of inputs: every rank the family takes, its first feature size, two batch sizes."""
    c = ctx.spec.features[0]
    cases = []
    for i, rank in enumerate(ctx.spec.layout.ranks):
        for batch in (4, 7):
            cases.append(Case(shape=input_shape(ctx.spec.layout, batch, c, rank, length=3 + i), seed=ctx.seed + batch))
    return cases


def _describe(cmp: Comparison, bitwise: bool) -> str:
    return "bitwise equal" if bitwise else f"{cmp.max_ulp:.3g} ulp apart ({cmp.tol_ratio:.3g}x tolerance)"


@register_check("variant_matches_eager", dtypes=("float32", "float16", "bfloat16"),
                variants=(COMPILE.name, EXPORT.name), accuracy=True)
def variant_matches_eager(ctx: CheckContext) -> Observation:
    """The compiled (or exported) module equals the eager one within the family's tolerance, ulp distance kept."""
    params = ctx.params()
    worst: tuple[float, str] = (-1.0, "")
    metrics: dict[str, Any] = {"variant": ctx.variant}
    bitwise_all = True
    counterexample = None
    differentiate = not ctx.deployment.inference_only
    for case in _cases(ctx):
        x = ctx.input(case)
        c = ctx.num_features_of(x)
        deployed = ctx.build(c, params)
        eager = ctx.build(c, params, variant=EAGER.name)
        length = reduction_length(ctx.spec, tuple(x.shape))
        pairs: list[tuple[str, torch.Tensor, torch.Tensor, str]] = []
        if differentiate:
            xd, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            yd, ye = ctx.forward(deployed, xd), ctx.forward(eager, xe)
            dy = torch.randn(yd.shape, generator=torch.Generator().manual_seed(ctx.seed), dtype=torch.float64)
            dy = dy.to(yd.dtype)
            yd.backward(dy)
            ye.backward(dy)
            pairs.append(("forward", yd, ye, "forward"))
            if xd.grad is not None and xe.grad is not None:
                pairs.append(("grad_input", xd.grad, xe.grad, "backward"))
        else:
            with torch.no_grad():
                pairs.append(("forward", ctx.forward(deployed, x), ctx.forward(eager, x), "forward"))
        for label, got, want, kind in pairs:
            bitwise = bool(torch.equal(got, want)) or bool(
                torch.equal(torch.nan_to_num(got), torch.nan_to_num(want)) and torch.equal(got.isnan(), want.isnan()))
            bitwise_all &= bitwise
            # The eager output is the reference here: the question is whether deployment changed the numbers.
            cmp = compare(got.detach(), want.detach().to(torch.float64), ctx.dtype, ctx.tolerance(kind), length)
            key = f"{label}.{'x'.join(map(str, x.shape))}"
            metrics.update(cmp.as_dict(f"{key}."))
            metrics[f"{key}.bitwise"] = bitwise
            if cmp.tol_ratio > worst[0]:
                worst = (cmp.tol_ratio, f"{label} at shape {tuple(x.shape)}: {_describe(cmp, bitwise)}")
                if not cmp.ok:
                    counterexample = case.as_dict()
    ratio, where = worst
    metrics["tol_ratio"] = ratio
    metrics["bitwise"] = bitwise_all
    holds = counterexample is None
    what = f"{ctx.variant}d" if ctx.variant == COMPILE.name else "exported"
    if bitwise_all:
        return Observation(True, f"{what} == eager bitwise on every case", metrics)
    return Observation(holds, f"{what} vs eager, worst {where}", metrics, counterexample)


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@register_check("no_recompile_storm", variants=(COMPILE.name,))
def no_recompile_storm(ctx: CheckContext) -> Observation:
    """Across the sizes the suite draws, the compiled module compiles once per shape class (rank, dtype)."""
    params = ctx.params()
    c = ctx.spec.features[0]
    module = ctx.build(c, params, variant=EAGER.name)
    # A cache of its own: the count must not depend on what earlier items compiled.
    fn = compiled_forward(base_class(module), fresh=True)
    per_class: dict[str, dict[str, int]] = {}
    for i, rank in enumerate(ctx.spec.layout.ranks):
        label = f"rank{rank}"
        graphs = []
        for size in STORM_SIZES:
            x = ctx.input(Case(shape=input_shape(ctx.spec.layout, size, c, rank, length=size + i), seed=ctx.seed))
            start = _unique_graphs()
            # Each size on a copy of the same initial module: only the shape varies. A train step that advances
            # state the forward branches on (MABN's warm-up counter) recompiles per step, not per shape, and
            # settles once the warm-up is over; that is not what this property counts.
            with torch.no_grad():
                compiler_guarded(copy.deepcopy(module), fn, x)
            graphs.append(_unique_graphs() - start)
        per_class[label] = {"first": graphs[0], "recompiles": sum(graphs[1:])}
    recompiles = sum(v["recompiles"] for v in per_class.values())
    bound = RECOMPILE_BOUND * len(per_class)
    metrics: dict[str, Any] = {"recompiles": recompiles, "bound": bound, "sizes": list(STORM_SIZES),
                               **{f"{k}.{n}": v for k, d in per_class.items() for n, v in d.items()}}
    counts = ", ".join(f"{k}: {d['recompiles']}" for k, d in per_class.items())
    summary = (f"{recompiles} recompilation(s) over {len(STORM_SIZES)} sizes in each of {len(per_class)} shape "
               f"classes ({counts}); bound {bound}")
    return Observation(recompiles <= bound, summary, metrics)


def _export_or_refusal(ctx: CheckContext, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | str:
    try:
        with torch.no_grad():
            return ctx.forward(module, x)
    except DeploymentUnavailable as exc:
        return str(exc)


@register_check("export_train_eval_semantics", variants=(EXPORT.name,))
def export_train_eval_semantics(ctx: CheckContext) -> Observation:
    """Eval export = the folded per-channel affine map of the running statistics; a train-mode export of a
    batch-statistic norm is refused, or computes the batch statistics."""
    params = ctx.params()
    case = _cases(ctx)[-1]
    x = ctx.input(case)
    c = ctx.num_features_of(x)
    axis = ctx.spec.layout.features_axis % x.dim()
    length = reduction_length(ctx.spec, tuple(x.shape))
    metrics: dict[str, Any] = {}
    problems: list[str] = []

    # eval: the truth is the fp64 reference's eval map, fitted per channel (the folded affine map).
    module = ctx.build(c, params, training=False)
    ref = ctx.reference(module, c, params).eval()
    probes = [ctx.input(Case(shape=tuple(x.shape), seed=ctx.seed + k)).to(torch.float64) for k in range(3)]
    with torch.no_grad():
        fit = per_channel_affine(lambda t: ref(t), probes, axis)
    if fit.residual > 1e-9:
        raise Skip(f"the reference's eval map is not per-channel affine here (residual {fit.residual:.3g}), so "
                   "there is no folded map to compare with")
    got = _export_or_refusal(ctx, module, x)
    if isinstance(got, str):
        raise DeploymentUnavailable(got)
    cmp = compare(got, fit.apply(x, axis), ctx.dtype, ctx.tolerance("forward"), length)
    metrics.update(cmp.as_dict("eval."))
    eval_text = f"eval export vs folded affine map: {cmp.max_ulp:.3g} ulp ({cmp.tol_ratio:.3g}x tolerance)"
    if not cmp.ok:
        problems.append(f"the eval-mode export is not the folded map of the running statistics: {eval_text}")

    # train: refused (the state update cannot be carried back), or judged against the reference in train mode.
    train_module = ctx.build(c, params, training=True)
    train_ref = ctx.reference(train_module, c, params).train()
    got_train = _export_or_refusal(ctx, train_module, x)
    if isinstance(got_train, str):
        metrics["train_export"] = "refused"
        train_text = f"train export refused ({got_train})"
    else:
        with torch.no_grad():
            truth = train_ref(x.detach().to(torch.float64))
        tcmp = compare(got_train, truth, ctx.dtype, ctx.tolerance("forward"), length)
        metrics["train_export"] = "exported"
        metrics.update(tcmp.as_dict("train."))
        train_text = f"train export vs batch statistics: {tcmp.max_ulp:.3g} ulp ({tcmp.tol_ratio:.3g}x tolerance)"
        if not tcmp.ok:
            problems.append(f"the train-mode export does not compute the batch statistics: {train_text}")
    if problems:
        return Observation(False, "; ".join(problems), metrics, case.as_dict())
    return Observation(True, f"{eval_text}; {train_text}", metrics)


@register_check("export_ops", variants=(EXPORT.name,))
def export_ops(ctx: CheckContext) -> Observation:
    """The op set of the exported ONNX graph: a fused normalization op, or a decomposition into primitives."""
    case = _cases(ctx)[0]
    x = ctx.input(case)
    module = ctx.build(ctx.num_features_of(x), training=False)
    with torch.no_grad():
        ctx.forward(module, x)
    # the plugin's module through the protocol reports its graph from over there (normbench.remote.proxy)
    graph = module.exported_graph() if isinstance(module, RemoteModule) else last_export(module)
    if graph is None:  # the module never reached ONNX Runtime (a forward that does not call itself)
        raise Skip("the module's forward did not run through an exported graph")
    fused = [op for op in graph.ops if op in ONNX_NORM_OPS]
    metrics = {"onnx_ops": list(graph.ops), "onnx_opset": graph.opset, "onnx_norm_op": fused[0] if fused else None,
               "decomposed": not fused, "export_s": round(graph.seconds, 3)}
    how = f"the ONNX op {', '.join(fused)}" if fused else "a decomposition"
    return Observation(True, f"exported (opset {graph.opset}) as {how}: ops {', '.join(graph.ops)}", metrics)
