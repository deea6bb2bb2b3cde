"""Deployment variants for timing: a module as people ship it, not only as torch runs it eagerly.

- `eager`: the module itself (what every benchmark timed before variants existed);
- `compile`: `torch.compile(module, dynamic=False)`: the default Inductor backend and options, static shapes (each
  case is compiled for its own shape, as a fixed-shape deployment is; see `_build_compiled`). The first call
  compiles; `build_variant` makes that call (and one more, so a guard-triggered recompile is paid too) before
  anything is timed, and reports the seconds it took as `build_s`, never inside a timed region;
- `onnxruntime`: the module exported in eval mode with `torch.onnx.export(..., dynamo=True)` (torch.export, then
  ONNX through onnxscript) and run by an onnxruntime InferenceSession on the CPU execution provider, with as many
  intra-op threads as torch uses. It has no autograd, so it times the inference of a pass; `backward` passes
  cannot be built. The graph's op types are reported (`onnx_ops`: LayerNormalization op or a decomposition).

A variant that cannot be built for a module (an op ONNX lacks, a dtype ONNX Runtime's CPU provider has no kernel
for, an Inductor failure) raises VariantUnavailable with the reason, which the benchmark turns into one skipped
case. The conformance suite's variants (correctness under compile / export) live elsewhere; this module only
builds what the benchmarks and the claims lab time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

VARIANTS: tuple[str, ...] = ("eager", "compile", "onnxruntime")
#: passes onnxruntime can run: a forward without autograd (eval mode)
ORT_PASSES: tuple[str, ...] = ("forward", "inference")


class VariantUnavailable(RuntimeError):
    """This variant cannot be built for this module, dtype or pass; the message says why."""


@dataclass
class BuiltVariant:
    """`call(x)` runs the module as the variant deploys it; `build_s` is what building it cost (never timed)."""

    variant: str
    call: Callable[[torch.Tensor], Any]
    build_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx's exporter prints progress and warnings (missing torchvision ops, ...): keep them out of reports."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch._inductor", "onnxscript")]
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


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")


def build_variant(variant: str, module: nn.Module, example: torch.Tensor, *, pass_name: str = "inference",
                  threads: int | None = None) -> BuiltVariant:
    """Build `module` as `variant` for inputs like `example` (its mode - train/eval - is the caller's)."""
    check_variant(variant)
    if variant == "eager":
        return BuiltVariant("eager", module)
    if variant == "compile":
        return _build_compiled(module, example, pass_name)
    return _build_onnxruntime(module, example, pass_name, threads or torch.get_num_threads())


def _build_compiled(module: nn.Module, example: torch.Tensor, pass_name: str) -> BuiltVariant:
    from torch._dynamo.utils import counters

    # Every case shares its module class's forward code with the other cases (shapes, passes): dynamo's default
    # limit of 8 compiles per code object would make the 9th case silently run eagerly, and automatic dynamic
    # shapes would give the 2nd shape a dynamic-shape kernel. Static shapes and a higher limit compile each case
    # for its own shape, as a fixed-shape deployment is.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4096)
    compiled = torch.compile(module, dynamic=False)
    before = counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    try:
        with _quiet():
            for _ in range(2):  # the second call pays a recompile a guard on the first call's state would cause
                if pass_name == "inference":
                    with torch.inference_mode():
                        compiled(example)
                else:
                    out = compiled(example)
                    if pass_name != "forward":
                        first = out[0] if isinstance(out, tuple | list) else out
                        first.sum().backward()  # compiles the backward graph too (AOTAutograd)
    except Exception as exc:  # noqa: BLE001 - whatever Inductor raises, the case becomes one explained skip
        raise VariantUnavailable(f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") \
            from exc
    build_s = time.perf_counter() - started
    return BuiltVariant("compile", compiled, build_s,
                        {"backend": "inductor", "graphs": counters["stats"]["unique_graphs"] - before})


def _build_onnxruntime(module: nn.Module, example: torch.Tensor, pass_name: str, threads: int) -> BuiltVariant:
    if pass_name not in ORT_PASSES:
        raise VariantUnavailable(f"onnxruntime runs inference only (no autograd): pass {pass_name!r} cannot be "
                                 f"built; passes it runs: {list(ORT_PASSES)}")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise VariantUnavailable("onnxruntime is not installed (pip install 'normbench[deploy]')") from exc
    started = time.perf_counter()
    was_training = module.training
    module.eval()  # an ONNX graph is an inference graph: batch-statistic norms export their eval map
    try:
        with _quiet():
            program = torch.onnx.export(module, (example.detach(),), dynamo=True, verbose=False)
        proto = program.model_proto
    except Exception as exc:  # noqa: BLE001 - export failures of any kind are one explained skip
        raise VariantUnavailable(f"torch.onnx.export failed: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from exc
    finally:
        module.train(was_training)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning worker threads steal a shared machine's cores from each other (see docs/benchmarks.md); follow the
    # same wait policy torch's OpenMP threads were given.
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    options.add_session_config_entry("session.intra_op.allow_spinning", "0" if passive else "1")
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        array = example.detach().contiguous().numpy()
        session.run(None, {name: array})
    except Exception as exc:  # noqa: BLE001 - e.g. no CPU kernel for the dtype
        raise VariantUnavailable(f"onnxruntime cannot run the exported graph ({example.dtype}): "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    build_s = time.perf_counter() - started

    def call(x: torch.Tensor) -> Any:
        # the same array every call when x is the timed input: numpy() shares x's memory, no copy is timed
        return session.run(None, {name: array if x is example else x.detach().contiguous().numpy()})[0]

    ops = sorted({node.op_type for node in proto.graph.node})
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return BuiltVariant("onnxruntime", call, build_s,
                        {"onnx_ops": ops, "opset": opset, "onnxruntime": ort.__version__,
                         "allow_spinning": not passive, "provider": "CPUExecutionProvider"})
