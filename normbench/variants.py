"""Deployment variants (issue 10): judge a module as it is shipped, not only as it runs eagerly.

- ``eager``: the module as built (the default; test ids carry no variant segment).
- ``compile``: ``torch.compile`` with Inductor and its default options, ``dynamic=True`` because every
  family's checks draw varying shapes (batch, sequence and spatial sizes) from hypothesis.
- ``export``: ``torch.export`` then ONNX through ``torch.onnx.export(dynamo=True)``, run in ONNX Runtime on
  the CPU. Inference only: what the graph returns carries no autograd history.

A variant is applied to the module a check builds (``CheckContext.build``) by swapping its class for a subclass
whose ``forward`` runs the deployed form; attributes, parameters, buffers, ``train()``/``eval()`` and
``copy.deepcopy`` behave as before, so every check runs unchanged. A variant that cannot be built for a module
(an export that fails, an op ONNX Runtime lacks, a dtype its Python API cannot carry) raises
``VariantUnavailable``, a ``Skip`` whose reason names the variant and the cause: one explained item, never a
crash of the run.

Costs (2-core CPU): Inductor compiles once per module class, dtype, grad mode, train/eval and shape class (the
graphs are cached per class in the judging process and on disk by Inductor's FX graph cache); export runs once
per module class, configuration, mode, dtype and input rank — parameters and buffers are inputs of the
exported graph, so a module with other weights reuses the session.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normbench.skip import Skip

VARIANTS = ("eager", "compile", "export")
DEFAULT_VARIANT = "eager"

#: Dynamo's per-code-object recompile limit. The default (8) is reached by one norm class across the dtypes,
#: modes and grad modes the suite draws; past it Dynamo would silently run eager code and the compile variant
#: would judge eager numerics. Raised, and hitting it is an error (fail_on_recompile_limit_hit).
RECOMPILE_LIMIT = 256

#: Checks whose verdict rests on gradients through the module: under ``export`` (inference only) they are
#: skipped up front. Checks that only partly differentiate (determinism, noncontiguous input, empty batch, ...)
#: run their forward parts; if one calls backward on an exported output the item becomes the same skip
#: (runner.judge turns autograd's "does not require grad" error into it).
EXPORT_INFERENCE_ONLY = {
    "gradient_equivalence": "compares input gradients",
    "gradcheck": "differentiates numerically and analytically through the module",
    "weight_gradient_reduction": "compares dγ/dβ",
    "stateful_trajectory": "takes optimizer steps through the module",
}
INFERENCE_ONLY_REASON = "export variant is inference-only"

#: The bounded plan of a deployment variant (the default; ``--variant-plan full`` lifts it). Every compilation
#: costs seconds on a 2-core CPU, so a variant judges the properties whose verdict deployment can change — the
#: numbers against the fp64 truth, gradients, extreme inputs, dtype, the state a train step writes, the fused
#: residual path — plus its own properties, in the dtypes that variant is deployed in: bfloat16 for Inductor on
#: the CPU, float16 for ONNX Runtime (whose Python API cannot carry bfloat16). The properties left out
#: (invariances, layouts, batch independence, ...) follow from these for a module that computes the right
#: numbers, and are judged in eager mode.
VARIANT_PLAN_CHECKS = frozenset({
    "forward_equivalence", "gradient_equivalence", "weight_gradient_reduction", "adversarial_inputs",
    "constant_rows", "dtype_preservation", "running_statistics", "train_eval_consistency", "fused_residual",
})
VARIANT_PLAN_DTYPES = {"compile": ("float32", "bfloat16"), "export": ("float32", "float16")}
#: The checks judged in the variant's half dtype too; the others in float32 only. Inductor and ONNX Runtime keep
#: a half input's arithmetic in float32 inside a fused kernel, so what deployment changes in half precision is
#: where the roundings to the half dtype happen (a cast order fused away): the output shows it (compiled against
#: the fp64 truth and against eager), and the output dtype. Gradients, extreme inputs, constant groups and
#: running statistics are judged in float32 here, in every dtype in eager mode and with --variant-plan full.
VARIANT_HALF_CHECKS = frozenset({"forward_equivalence", "variant_matches_eager", "dtype_preservation"})


class VariantUnavailable(Skip):
    """The variant cannot be built or run for this module; the message says which and why."""


class UnknownVariantError(ValueError):
    """A variant name that is not one of VARIANTS."""


def check_variant(name: str) -> str:
    if name not in VARIANTS:
        raise UnknownVariantError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return name


def in_bounded_plan(variant: str, check: str, dtype: str, variant_specific: bool) -> bool:
    """Whether an item belongs to the variant's bounded plan (every eager item does)."""
    if variant == DEFAULT_VARIANT:
        return True
    if not (variant_specific or check in VARIANT_PLAN_CHECKS) or dtype not in VARIANT_PLAN_DTYPES[variant]:
        return False
    return dtype == "float32" or check in VARIANT_HALF_CHECKS


#: eps variants of the equivalence checks under a variant's bounded plan: eps = 1 shows where eps sits in the
#: deployed graph (a constant folded or moved); the tiny eps an optimizer may drop is judged by constant_rows
#: (eps = 1e-12), the default eps by every other case.
VARIANT_EPS_VARIANTS = (1.0,)


def compiler_guarded(module: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(module, *args)` for a compiled forward `fn`; a failure of torch.compile itself becomes
    VariantUnavailable (see _raise_if_compiler_failed)."""
    try:
        return fn(module, *args, **kwargs)
    except Exception as exc:
        _raise_if_compiler_failed(module, base_class(module), args, kwargs, exc)
        raise


def variant_judges(variant: str, name: str, tags: tuple[str, ...] = ()) -> bool:
    """Whether the bounded plan of `variant` judges implementation `name`. The built-in float64 references are
    the truth every item is compared with, in eager mode; compiling or exporting one says nothing about code
    anybody deploys and costs as much as a real implementation, so under compile / export they are judged only
    with ``--variant-plan full``."""
    return variant == DEFAULT_VARIANT or not (name.startswith("reference.") and "reference" in tags)


#: Hidden sizes of the kernel-threshold cases under a deployment variant (the bounded plan). A compiled or
#: exported norm is specialised to its hidden size, so every size costs a compilation (about a second of the
#: system compiler per graph on a 2-core CPU) or an export. Inductor's CPU reduction loops and ONNX Runtime's
#: kernels branch on vector-width alignment and length, not on the GPU launch thresholds the eager list
#: (normbench.inputs.THRESHOLD_FEATURES) brackets: a size that fills whole vectors, and the largest, with a
#: tail of one element past every vector width. The rows past 65535 stay (the batch dimension is dynamic: no
#: new graph).
VARIANT_THRESHOLD_FEATURES = (1024, 8193)


def skip_reason(variant: str, check: str, variant_specific: bool = False) -> str | None:
    """Why an item of `check` cannot be judged under `variant` before anything is built, or None. A
    variant-specific check chooses its modes itself."""
    if variant != "export" or variant_specific:
        return None
    if check in EXPORT_INFERENCE_ONLY:
        return f"{INFERENCE_ONLY_REASON}: {check} {EXPORT_INFERENCE_ONLY[check]}"
    return None


def prepare(variant: str) -> None:
    """Load what the variant imports lazily (Dynamo, Inductor, the ONNX exporter, ONNX Runtime), so that the
    judge's fingerprint is taken after it (normbench.sandbox)."""
    check_variant(variant)
    if variant == "compile":
        configure_compile()
        import torch._inductor.compile_fx  # noqa: F401 - imported for its side effects, before the fingerprint
    elif variant == "export":
        with contextlib.suppress(ImportError, Skip), _quiet():
            import onnxruntime  # noqa: F401
            import torch.onnx._internal.exporter._core  # noqa: F401
            # One tiny export registers every lazily imported translation table.
            run_exported(apply_variant(nn.LayerNorm(2), "export"), nn.LayerNorm, (torch.ones(3, 2),), {})


def warm_compile() -> None:
    """Pay the compile variant's one-time costs in the sandbox's forkserver (normbench.preload), so each judging
    process forked from it starts warm: about 3 s of imports, CPU-ISA probing and first-compile setup per
    process, measured on the 2-core CPU. The forkserver forks every child, so nothing here may leave a
    thread behind (tqdm's monitor thread is switched off) or an OpenMP pool (one intra-op thread)."""
    from torch._dynamo import reset

    try:  # not a dependency: where it is installed, Inductor's progress bars would start its monitor thread
        import tqdm
    except ImportError:
        pass
    else:
        tqdm.tqdm.monitor_interval = 0
    torch.set_num_threads(1)
    prepare("compile")

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))

    x = torch.randn(3, 5, requires_grad=True)
    w = torch.ones(5, requires_grad=True)
    # A failure here (no C++ compiler, an Inductor error) must not take the forkserver down: each judging
    # process meets it again and reports it on its items.
    with contextlib.suppress(Exception), _quiet():
        torch.compile(norm, dynamic=True)(x, w).sum().backward()
    reset()


# -- compile -----------------------------------------------------------------------------------------------------

_configured = False


def configure_compile() -> None:
    """Dynamo/Inductor settings for judging: a recompile limit that is an error, one compile thread per judge
    process (each xdist worker already owns one core)."""
    global _configured
    if _configured:
        return
    import torch._dynamo
    import torch._inductor.config as inductor_config

    dynamo_config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, RECOMPILE_LIMIT)
    if hasattr(dynamo_config, "accumulated_recompile_limit"):
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit,
                                                        8 * RECOMPILE_LIMIT)
    if hasattr(dynamo_config, "fail_on_recompile_limit_hit"):
        dynamo_config.fail_on_recompile_limit_hit = True
    inductor_config.compile_threads = 1
    _configured = True


def compiled_forward(cls: type[nn.Module], fresh: bool = False) -> Callable[..., Any]:
    """``torch.compile(cls.forward, dynamic=True)``. Dynamo caches compiled graphs on the code object, so every
    instance of the class shares them. `fresh` compiles a copy of the code: a cache of its own, so a count of
    compilations does not depend on what earlier items compiled."""
    configure_compile()
    forward = cls.forward

    def call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return forward(self, *args, **kwargs)

    # A code object per class (and per fresh compile): Dynamo keys its cache and its recompile limit on the code
    # object, and compiling torch's own forward directly would put every torch.nn class on one shared wrapper
    # frame (external_utils.wrap_inline), whose limit the suite exhausts within a few items.
    own = types.FunctionType(call.__code__.replace(co_name=f"{cls.__name__}_forward"), call.__globals__,
                             f"{cls.__name__}_forward", call.__defaults__, call.__closure__)
    return torch.compile(own, dynamic=True)


def _raise_if_compiler_failed(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...],
                              kwargs: dict[str, Any], exc: Exception) -> None:
    """A compiled forward raised: when the eager forward of a copy runs on the same inputs, torch.compile itself
    failed on this module (a Dynamo internal assertion, an Inductor lowering error, ...), which is the variant
    that cannot be built for it (VariantUnavailable, one explained item), not an error of the implementation.
    When eager raises as well, the module's own error stands. The eager retry runs on a copy of the module and
    of the inputs, so the module itself sees only the failed compiled call."""
    if isinstance(exc, Skip):
        return
    clone = copy.deepcopy(module)
    clone.__class__ = cls

    def fresh(value: Any) -> Any:
        return value.detach().clone() if isinstance(value, torch.Tensor) else value

    try:
        with torch.no_grad():
            cls.forward(clone, *map(fresh, args), **{k: fresh(v) for k, v in kwargs.items()})
    except Exception:
        return
    raise VariantUnavailable(f"compile variant unavailable: torch.compile failed on {cls.__qualname__} where the "
                             f"eager forward runs: {_first_line(exc)}") from None


_VARIANT_CLASSES: dict[tuple[type[nn.Module], str], type[nn.Module]] = {}


def _variant_class(cls: type[nn.Module], variant: str) -> type[nn.Module]:
    key = (cls, variant)
    if key not in _VARIANT_CLASSES:
        if variant == "compile":
            fn = compiled_forward(cls)

            def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
                return compiler_guarded(self, fn, *args, **kwargs)
        else:
            def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
                return run_exported(self, cls, args, kwargs)
        # Same name and module: messages and reprs stay those of the implementation.
        _VARIANT_CLASSES[key] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                             "__qualname__": cls.__qualname__,
                                                             "_normbench_variant": variant,
                                                             "_normbench_base": cls})
    return _VARIANT_CLASSES[key]


def base_class(module: nn.Module) -> type[nn.Module]:
    """The implementation's own class of a module a variant was applied to."""
    return getattr(type(module), "_normbench_base", type(module))


def apply_variant(module: nn.Module, variant: str) -> nn.Module:
    """`module` itself, its forward now running the variant's deployed form."""
    check_variant(variant)
    if variant == "eager":
        return module
    cls = base_class(module)
    try:
        module.__class__ = _variant_class(cls, variant)
    except TypeError as exc:  # e.g. a class with __slots__ or a C extension type
        raise VariantUnavailable(f"{variant} variant unavailable: cannot wrap {cls.__qualname__}: {exc}") from None
    return module


# -- export ------------------------------------------------------------------------------------------------------

@dataclass
class ExportedGraph:
    """One exported module configuration: its ONNX Runtime session and what the graph is made of."""

    session: Any
    input_names: list[str]
    state_names: list[str]
    ops: tuple[str, ...]
    opset: int
    seconds: float
    #: per tensor input, the dims torch.export pinned to one value ({dim: size}): the graph is valid only for
    #: inputs of those sizes, even where the ONNX graph declares the dim dynamic (see _pinned_dims)
    pinned: tuple[dict[int, int], ...] = ()

    def accepts(self, tensors: list[torch.Tensor]) -> bool:
        return all(t.dim() > d and t.shape[d] == size
                   for t, dims in zip(tensors, self.pinned) for d, size in dims.items())


#: exported graphs by (class, configuration, mode, input signature, state signature): one per set of pinned dims
_EXPORTS: dict[Any, list[ExportedGraph] | VariantUnavailable] = {}
#: the last graph each module ran through (export_ops reports it)
_LAST_EXPORT: weakref.WeakKeyDictionary[nn.Module, ExportedGraph] = weakref.WeakKeyDictionary()

#: ONNX Runtime's Python API takes numpy arrays, and numpy has no bfloat16
_ORT_DTYPES = {torch.float32, torch.float64, torch.float16, torch.bool, torch.int64, torch.int32}


def _plain(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


def config_key(module: nn.Module) -> tuple[Any, ...]:
    """Every attribute an exported graph may have baked in as a constant: plain values (eps, num_groups,
    momentum, ...) by value, tensors that are not parameters or buffers by identity and version."""
    key: list[Any] = []
    for name, sub in module.named_modules():
        for attr, value in sorted(vars(sub).items()):
            if attr.startswith("_") and attr != "_normbench_variant":
                continue
            if isinstance(value, torch.Tensor):
                key.append((name, attr, id(value), value._version))
            elif _plain(value):
                key.append((name, attr, value))
    return tuple(key)


def _signature(value: Any) -> Any:
    # Dims of size 0 and 1 are specialised by torch.export, so they are part of the shape class.
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(min(s, 2) for s in value.shape))
    if isinstance(value, tuple | list):
        return tuple(_signature(v) for v in value)
    return ("value", repr(value))


class _Functional(nn.Module):
    """The module as a function of its input and its state: parameters and buffers become graph inputs, so one
    export serves every instance with the same configuration."""

    def __init__(self, inner: nn.Module, names: list[str], kwarg_names: list[str], n_args: int) -> None:
        super().__init__()
        # Not a submodule: its parameters and buffers are inputs of the graph, not initializers.
        self._inner = [inner]
        self.names = names
        self.kwarg_names = kwarg_names
        self.n_args = n_args

    def forward(self, *flat: torch.Tensor) -> Any:
        args = flat[:self.n_args]
        kwargs = dict(zip(self.kwarg_names, flat[self.n_args:self.n_args + len(self.kwarg_names)]))
        state = dict(zip(self.names, flat[self.n_args + len(self.kwarg_names):]))
        return torch.func.functional_call(self._inner[0], state, args, kwargs)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx prints progress and warns about every export; none of it is the module's output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    summary = text.split("## Exception summary", 1)[-1].strip() if "## Exception summary" in text else text
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:400]}"


def _export(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any],
            names: list[str], state: list[torch.Tensor]) -> ExportedGraph:
    import time

    try:
        import onnxruntime as ort
        from torch.export import Dim
    except ImportError as exc:
        raise VariantUnavailable(f"export variant unavailable: {exc} (pip install 'normbench[deploy]')") from None
    start = time.perf_counter()
    kwarg_names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    flat = (*args, *(kwargs[k] for k in kwarg_names), *state)
    wrapper = _Functional(module, names, kwarg_names, len(args))
    wrapper.train(module.training)
    # Every dim of the inputs may vary (torch.export specialises the ones it must); state shapes are fixed.
    dynamic = tuple({i: Dim.AUTO for i in range(t.dim())} for t in (*args, *(kwargs[k] for k in kwarg_names)))
    dynamic += tuple(None for _ in state)
    written = _writes_state(module, cls, args, kwargs)
    if written:
        # A train-mode batch-statistic norm updates its running statistics in place; an inference graph cannot
        # carry that back, so the export is refused rather than judged as a different module.
        raise VariantUnavailable(f"export variant refuses a {'train' if module.training else 'eval'}-mode module "
                                 f"that updates its state in place ({', '.join(written)}): an exported inference "
                                 "graph cannot carry the update back")
    # Exported with the implementation's own class: the variant's forward would export itself.
    variant_cls = type(module)
    module.__class__ = cls
    try:
        with _quiet():
            program = torch.onnx.export(wrapper, flat, dynamo=True, dynamic_shapes=(dynamic,), verbose=False)
        proto = program.model_proto
    except Exception as exc:  # torch.export or the ONNX translation refused the module
        raise VariantUnavailable(f"export variant unavailable: torch.onnx.export failed: {_first_line(exc)}") \
            from None
    finally:
        module.__class__ = variant_cls
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # e.g. an op or dtype without a CPU kernel in ONNX Runtime
        raise VariantUnavailable(f"export variant unavailable: ONNX Runtime refused the graph: "
                                 f"{_first_line(exc)}") from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    n_inputs = len(args) + len(kwarg_names)
    return ExportedGraph(session=session, input_names=[i.name for i in session.get_inputs()],
                         state_names=names, ops=tuple(sorted({n.op_type for n in proto.graph.node})), opset=opset,
                         seconds=time.perf_counter() - start,
                         pinned=_pinned_dims(getattr(program, "exported_program", None), n_inputs))


def _pinned_dims(program: Any, n_inputs: int) -> tuple[dict[int, int], ...]:
    """The input dims torch.export pinned to the example's size: plain ints, or symbols whose range is a single
    value. torch.onnx (2.13) declares such a dim dynamic in the ONNX graph while baking the example's size into
    the ops (a GroupNorm's reshape to (N, G, C·H·W/G) keeps C·H·W = 192 as a constant), so ONNX Runtime accepts
    another size and computes something else (tests/test_variants_findings.py). A graph is therefore run only on
    inputs of the sizes it was exported at; another size is exported anew."""
    if program is None:
        return tuple({} for _ in range(n_inputs))
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user_inputs = [spec.arg.name for spec in program.graph_signature.input_specs
                   if spec.kind.name == "USER_INPUT"] if hasattr(program, "graph_signature") else []
    by_name = {n.name: n for n in placeholders}
    nodes = [by_name[name] for name in user_inputs if name in by_name] or placeholders
    pinned: list[dict[int, int]] = []
    for node in nodes[:n_inputs]:
        value = node.meta.get("val")
        dims: dict[int, int] = {}
        for d, size in enumerate(getattr(value, "shape", ())):
            if isinstance(size, int):
                dims[d] = size
                continue
            ranges = program.range_constraints.get(size.node.expr) if hasattr(size, "node") else None
            if ranges is not None and ranges.lower == ranges.upper:
                dims[d] = int(ranges.lower)
        pinned.append(dims)
    return tuple(pinned)


def _writes_state(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """The parameters and buffers one eager forward of (a copy of) the module writes to in place. torch.export
    through a functional call does not keep such writes (the running-statistics update of a train-mode
    BatchNorm vanishes from the graph), so they are detected here, on the eager module."""
    clone = copy.deepcopy(module)
    clone.__class__ = cls
    tensors = [*clone.named_parameters(), *clone.named_buffers()]
    # Values, not version counters: the native batch-norm kernel updates the running statistics without
    # bumping them.
    before = [t.detach().clone() for _, t in tensors]
    with torch.no_grad():
        clone(*[a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
    return [name for (name, t), old in zip(tensors, before) if not torch.equal(t.detach(), old)
            and not (t.is_floating_point() and bool(torch.isnan(t).all()) and bool(torch.isnan(old).all()))]


def exported_graph(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> tuple[ExportedGraph, list[torch.Tensor]]:
    """The exported graph for this module and input signature (exported on first use) and the state to feed."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    bad = sorted({str(t.dtype) for t in tensors} - {str(d) for d in _ORT_DTYPES})
    if bad:
        raise VariantUnavailable(f"export variant unavailable: ONNX Runtime's Python API cannot carry {bad[0]} "
                                 "tensors (numpy has no such dtype)")
    if any(t.device.type != "cpu" for t in tensors):
        raise VariantUnavailable("export variant runs ONNX Runtime on the CPU only")
    if any(not isinstance(v, torch.Tensor) and not _plain(v) for v in (*args, *kwargs.values())):
        raise VariantUnavailable("export variant unavailable: the forward takes an argument that is neither a "
                                 "tensor nor a plain value")
    named = [(n, t) for n, t in module.named_parameters()] + [(n, t) for n, t in module.named_buffers()]
    names = [n for n, _ in named]
    state = [t.detach() for _, t in named]
    key = (cls, config_key(module), module.training, _signature(args),
           tuple((k, _signature(v)) for k, v in sorted(kwargs.items())),
           tuple((n, t.dtype, tuple(t.shape)) for n, t in named))
    graphs = _EXPORTS.get(key, [])
    if isinstance(graphs, VariantUnavailable):
        raise VariantUnavailable(str(graphs))
    graph = next((g for g in graphs if g.accepts(tensors)), None)
    if graph is None:
        try:
            graph = _export(module, cls, args, kwargs, names, state)
        except VariantUnavailable as exc:
            if not graphs:
                _EXPORTS[key] = exc
            raise VariantUnavailable(str(exc)) from None
        _EXPORTS[key] = [*graphs, graph]
    return graph, state


def run_exported(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The module's forward through its exported ONNX graph in ONNX Runtime."""
    graph, state = exported_graph(module, cls, args, kwargs)
    values = [*(a for a in args if isinstance(a, torch.Tensor)),
              *(v for v in kwargs.values() if isinstance(v, torch.Tensor)), *state]
    feeds = {name: v.detach().contiguous().numpy() for name, v in zip(graph.input_names, values)}
    try:
        outputs = graph.session.run(None, feeds)
    except Exception as exc:  # a shape the export specialised, or a kernel failing on this input
        raise VariantUnavailable(f"export variant: ONNX Runtime could not run the exported graph on inputs "
                                 f"{[tuple(v.shape) for v in values[:1]]}: {_first_line(exc)}") from None
    _LAST_EXPORT[module] = graph
    result = [torch.from_numpy(o.copy()) if hasattr(o, "dtype") else torch.tensor(o) for o in outputs]
    return result[0] if len(result) == 1 else tuple(result)


def last_export(module: nn.Module) -> ExportedGraph | None:
    """The exported graph the module last ran through (None before its first call under ``export``)."""
    return _LAST_EXPORT.get(module)
