"""``torch.export`` then ONNX through ``torch.onnx.export(dynamo=True)``, run in ONNX Runtime on the CPU. Inference
only: what the graph returns carries no autograd history. Needs ``pip install 'normbench[deploy]'``.

Judging (`wrap`): the module is exported as a function of its inputs and its state (parameters and buffers are
inputs of the graph), with every input dim dynamic where torch.export allows, once per module class,
configuration, mode, dtype and input rank; a module with other weights reuses the session. A train-mode module
that updates its state in place is refused (an inference graph cannot carry the update back).

Timing (`build`): the module exported in eval mode for the case's shape and run by an InferenceSession with as
many intra-op threads as torch uses; it times the inference of a pass (forward, inference), never a backward. The
graph's op types are reported (`onnx_ops`: a LayerNormalization op or a decomposition).

Called ``onnxruntime`` by the benchmarks before one deployment served both: that name is an alias.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from normbench.deploy.base import BuiltDeployment, Deployment, DeploymentUnavailable, first_line, quiet
from normbench.skip import Skip

#: ONNX Runtime's Python API takes numpy arrays, and numpy has no bfloat16
EXPORT_DTYPES = frozenset({"float32", "float64", "float16", "bool", "int64", "int32"})
#: the benchmark passes ONNX Runtime can run: a forward without autograd (eval mode)
ORT_PASSES: tuple[str, ...] = ("forward", "inference")


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
_EXPORTS: dict[Any, list[ExportedGraph] | DeploymentUnavailable] = {}
#: the last graph each module ran through (export_ops reports it)
_LAST_EXPORT: weakref.WeakKeyDictionary[nn.Module, ExportedGraph] = weakref.WeakKeyDictionary()



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


def _export(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any],
            names: list[str], state: list[torch.Tensor]) -> ExportedGraph:
    import time

    try:
        import onnxruntime as ort
        from torch.export import Dim
    except ImportError as exc:
        raise DeploymentUnavailable(f"export variant unavailable: {exc} (pip install 'normbench[deploy]')") from None
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
        raise DeploymentUnavailable(f"export variant refuses a {'train' if module.training else 'eval'}-mode module "
                                 f"that updates its state in place ({', '.join(written)}): an exported inference "
                                 "graph cannot carry the update back")
    # Exported with the implementation's own class: the variant's forward would export itself.
    variant_cls = type(module)
    module.__class__ = cls
    try:
        with quiet():
            program = torch.onnx.export(wrapper, flat, dynamo=True, dynamic_shapes=(dynamic,), verbose=False)
        proto = program.model_proto
    except Exception as exc:  # torch.export or the ONNX translation refused the module
        raise DeploymentUnavailable(f"export variant unavailable: torch.onnx.export failed: {first_line(exc)}") \
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
        raise DeploymentUnavailable(f"export variant unavailable: ONNX Runtime refused the graph: "
                                 f"{first_line(exc)}") from None
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
    bad = sorted(str(t.dtype) for t in tensors if str(t.dtype).removeprefix("torch.") not in EXPORT_DTYPES)
    if bad:
        raise DeploymentUnavailable(f"export variant unavailable: ONNX Runtime's Python API cannot carry {bad[0]} "
                                 "tensors (numpy has no such dtype)")
    if any(t.device.type != "cpu" for t in tensors):
        raise DeploymentUnavailable("export variant runs ONNX Runtime on the CPU only")
    if any(not isinstance(v, torch.Tensor) and not _plain(v) for v in (*args, *kwargs.values())):
        raise DeploymentUnavailable("export variant unavailable: the forward takes an argument that is neither a "
                                 "tensor nor a plain value")
    named = [(n, t) for n, t in module.named_parameters()] + [(n, t) for n, t in module.named_buffers()]
    names = [n for n, _ in named]
    state = [t.detach() for _, t in named]
    key = (cls, config_key(module), module.training, _signature(args),
           tuple((k, _signature(v)) for k, v in sorted(kwargs.items())),
           tuple((n, t.dtype, tuple(t.shape)) for n, t in named))
    graphs = _EXPORTS.get(key, [])
    if isinstance(graphs, DeploymentUnavailable):
        raise DeploymentUnavailable(str(graphs))
    graph = next((g for g in graphs if g.accepts(tensors)), None)
    if graph is None:
        try:
            graph = _export(module, cls, args, kwargs, names, state)
        except DeploymentUnavailable as exc:
            if not graphs:
                _EXPORTS[key] = exc
            raise DeploymentUnavailable(str(exc)) from None
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
        raise DeploymentUnavailable(f"export variant: ONNX Runtime could not run the exported graph on inputs "
                                 f"{[tuple(v.shape) for v in values[:1]]}: {first_line(exc)}") from None
    _LAST_EXPORT[module] = graph
    result = [torch.from_numpy(o.copy()) if hasattr(o, "dtype") else torch.tensor(o) for o in outputs]
    return result[0] if len(result) == 1 else tuple(result)


def last_export(module: nn.Module) -> ExportedGraph | None:
    """The exported graph the module last ran through (None before its first call under ``export``)."""
    return _LAST_EXPORT.get(module)


class Export(Deployment):
    name = "export"
    aliases = ("onnxruntime",)
    title = "ONNX Runtime (CPU)"
    dtypes = EXPORT_DTYPES
    #: ONNX Runtime is deployed in float16 beside float32 (its Python API cannot carry bfloat16)
    plan_dtypes = ("float32", "float16")
    inference_only = True
    #: None: importing ONNX Runtime starts a native thread, and a process with threads must not fork
    preload = None
    timeout_factor = 4
    passes = ORT_PASSES

    def prepare(self) -> None:
        with contextlib.suppress(ImportError, Skip), quiet():
            import onnxruntime  # noqa: F401
            import torch.onnx._internal.exporter._core  # noqa: F401
            # One tiny export registers every lazily imported translation table.
            run_exported(self.wrap(nn.LayerNorm(2)), nn.LayerNorm, (torch.ones(3, 2),), {})

    def _forward(self, cls: type[nn.Module]) -> Callable[..., Any]:
        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            return run_exported(module, cls, args, kwargs)
        return forward

    def build(self, module: nn.Module, example: torch.Tensor, *, pass_name: str = "inference",
              threads: int | None = None) -> BuiltDeployment:
        if pass_name not in ORT_PASSES:
            raise DeploymentUnavailable(f"onnxruntime runs inference only (no autograd): pass {pass_name!r} cannot "
                                        f"be built; passes it runs: {list(ORT_PASSES)}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DeploymentUnavailable("onnxruntime is not installed (pip install 'normbench[deploy]')") from exc
        threads = threads or torch.get_num_threads()
        started = time.perf_counter()
        was_training = module.training
        module.eval()  # an ONNX graph is an inference graph: batch-statistic norms export their eval map
        try:
            with quiet():
                program = torch.onnx.export(module, (example.detach(),), dynamo=True, verbose=False)
            proto = program.model_proto
        except Exception as exc:  # noqa: BLE001 - export failures of any kind are one explained skip
            raise DeploymentUnavailable(f"torch.onnx.export failed: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
        finally:
            module.train(was_training)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning worker threads steal a shared machine's cores from each other (see docs/benchmarks.md); follow
        # the same wait policy torch's OpenMP threads were given.
        passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
        options.add_session_config_entry("session.intra_op.allow_spinning", "0" if passive else "1")
        try:
            session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            array = example.detach().contiguous().numpy()
            session.run(None, {name: array})
        except Exception as exc:  # noqa: BLE001 - e.g. no CPU kernel for the dtype
            raise DeploymentUnavailable(f"onnxruntime cannot run the exported graph ({example.dtype}): "
                                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
        build_s = time.perf_counter() - started

        def call(x: torch.Tensor) -> Any:
            # the same array every call when x is the timed input: numpy() shares x's memory, no copy is timed
            return session.run(None, {name: array if x is example else x.detach().contiguous().numpy()})[0]

        ops = sorted({node.op_type for node in proto.graph.node})
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return BuiltDeployment(self.name, call, build_s,
                               {"onnx_ops": ops, "opset": opset, "onnxruntime": ort.__version__,
                                "allow_spinning": not passive, "provider": "CPUExecutionProvider"})


EXPORT = Export()
