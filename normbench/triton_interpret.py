"""Judging Triton kernels on CPU through Triton's interpreter (``--triton-interpret``), without a GPU.

Triton kernels take CUDA tensors; with ``TRITON_INTERPRET=1`` set before a kernel is decorated (``@triton.jit`` reads
it then, at the plugin's import), Triton runs it in Python on CPU tensors. So under ``--triton-interpret`` every
process that imports a plugin (discovery, judging, the probe below) sets the variable first
(`set_interpreter_environment`, called by normbench.sandbox before it loads the plugin's source). The forkserver the
children come from imports torch and normbench only; under ``--variant compile`` it imports triton too (Inductor),
which is harmless: triton reads the variable per decoration, not at its own import.

Before anything is planned, each selected implementation is probed once in a child process of its own (`probe_all`):
its module is built and run forward and backward on a small float32 CPU input while every kernel the interpreter
launches is noted. Then, for the run:

- an implementation whose probe launched Triton kernels and ran is judged on CPU (a kernel declared
  ``devices=("cuda",)`` gains "cpu" for this run);
- one whose probe raised from Triton's own frames (a scalar passed where the interpreter wants a tensor, an autotuner
  that benchmarks its configs: "0 active drivers") gets ONE skipped item naming the kernel, where it was launched
  and the error, instead of an error on every item (`interpreter_skip_outcome`);
- any other implementation is planned as without the option (a probe that raised elsewhere is left to its items,
  which say what went wrong).

A plugin that Triton refuses to import without a device is one skipped entry of its source
(`import_failure_reason`, used by discovery).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from normbench import wire
from normbench.implementation import Implementation
from normbench.outcome import ItemKey, Outcome
from normbench.registry import Registry
from normbench.triton_failures import (  # noqa: F401 - re-exported: the names this module has always offered
    ENV_VAR,
    import_failure_reason,
    interpreter_failure,
    set_interpreter_environment,
    triton_folder,
)
from normbench.variants import DEFAULT_VARIANT
from normbench.verdicts import Verdict

#: the property name of the one skipped item of an implementation the interpreter cannot run
SKIP_PROPERTY = "triton_interpreter"


@dataclass(frozen=True)
class Probe:
    """What one call of an implementation under the interpreter showed."""

    #: the kernels it launched through the interpreter, in order of first launch
    kernels: tuple[str, ...] = ()
    #: why the interpreter could not run it (interpreter_failure), or None
    failure: str | None = None
    #: why this triton's interpreter cannot judge bfloat16 (bfloat16_fault), or None where it can
    bfloat16: str | None = None


def _record_launches(kernels: list[str]) -> None:
    """Note the name of every kernel the interpreter launches (this probe process ends after one call)."""
    if "triton" not in sys.modules:
        return
    from triton.runtime.interpreter import InterpretedFunction

    run = InterpretedFunction.run

    def noting(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(getattr(self, "fn", None), "__name__", "?")
        if name not in kernels:
            kernels.append(name)
        return run(self, *args, **kwargs)

    InterpretedFunction.run = noting  # type: ignore[method-assign]


def probe(impl: Implementation, spec: Any) -> Probe:
    """Build `impl`'s module and run it forward and backward once on a small float32 CPU input (in the process that
    imported it, with the interpreter on): which kernels ran, and whether the interpreter could run them."""
    import torch

    from normbench.checks.base import CheckContext, Skip
    from normbench.inputs import Case, input_shape

    kernels: list[str] = []
    _record_launches(kernels)
    dtype = "float32" if "float32" in impl.dtypes else impl.dtypes[0]
    rank = impl.ranks[0] if impl.ranks else spec.layout.ranks[-1]
    features = 16 if impl.hidden_multiple is None else -(-16 // impl.hidden_multiple) * impl.hidden_multiple
    try:
        ctx = CheckContext(impl=impl, spec=spec, prop=spec.properties[0], dtype=getattr(torch, dtype), mode="train")
        module = ctx.build(features)
        x = ctx.input(Case(input_shape(spec.layout, 2, features, rank), seed=0))
        x.requires_grad_(not impl.inference_only)
        out = ctx.forward(module, x)
        if out.requires_grad:
            out.backward(torch.ones_like(out))
    except Skip:
        pass  # a declaration the probe's case is outside of: its items say so
    except BaseException as exc:  # noqa: BLE001 - plugin code, SystemExit included
        return Probe(tuple(kernels), interpreter_failure(exc))
    return Probe(tuple(kernels), None)


def bfloat16_fault() -> str | None:
    """Why this triton's interpreter computes bfloat16 otherwise than a GPU does, or None where it does not. Triton 3.9
    keeps bfloat16 as raw uint16 in numpy: it truncates a float32 -> bfloat16 cast (rounds toward zero, a systematic
    error of half an ulp: every kernel that computes in float32 and stores bfloat16 fails forward_equivalence's bias
    bound) and adds bfloat16 values as integers (1.5 + 1.5 gives inf). Tested, not assumed: a triton that fixes it
    is judged in bfloat16."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _bfloat16_self_test(X32, X16, Y):  # noqa: ANN001 - Triton types kernel arguments at launch
        tl.store(Y, tl.load(X32).to(tl.bfloat16))
        half = tl.load(X16)
        tl.store(Y + 1, half + half)

    wide = torch.tensor([1 + 2**-8 + 2**-12])  # above the midpoint of two bfloat16 neighbours: rounds up
    half = torch.tensor([1.5], dtype=torch.bfloat16)
    out = torch.zeros(2, dtype=torch.bfloat16)
    _bfloat16_self_test[(1,)](wide, half, out)
    faults = []
    if out[0] != wide.to(torch.bfloat16):
        faults.append(f"it rounds float32 {wide.item():.8g} to bfloat16 {out[0].item():g} where a GPU rounds to "
                      f"nearest even ({wide.to(torch.bfloat16).item():g})")
    if out[1] != half + half:
        faults.append(f"its bfloat16 1.5 + 1.5 is {out[1].item():g}")
    if not faults:
        return None
    return (f"not judged in bfloat16 under Triton's interpreter (--triton-interpret): this triton "
            f"({triton.__version__}) emulates bfloat16 otherwise than a GPU: {'; '.join(faults)}")


def _probe_child(conn: Connection, source: tuple[str, ...], name: str, spec: Any, limits: Any, output: str) -> None:
    from normbench.sandbox import _child_start, _load_source

    origin = _child_start(limits, output)
    set_interpreter_environment()  # whatever `limits` says: the probe is the interpreter's
    try:
        found = [i for i in _load_source(source, origin) if isinstance(i, Implementation) and i.name == name]
        result = probe(found[0], spec) if found and "triton" in sys.modules else Probe()
        fault = bfloat16_fault() if result.kernels and result.failure is None else None
        wire.send(conn, ["ok", list(result.kernels), result.failure, fault])
    except BaseException as exc:  # noqa: BLE001 - plugin code: its items will say what went wrong
        wire.send(conn, ["error", f"{type(exc).__name__}: {exc}"])


def _probe_reply(reply: Any) -> Probe:
    if not (isinstance(reply, list) and reply and reply[0] in ("ok", "error")):
        raise wire.ProtocolError("a probe reply that is neither ok nor error")
    if reply[0] == "error" or len(reply) != 4 or not isinstance(reply[1], list) or len(reply[1]) > 64:
        return Probe()
    kernels = tuple(wire.text(k, "a kernel name", 200) for k in reply[1])
    failure, fault = (None if r is None else wire.text(r, "the failure", 2000) for r in reply[2:])
    return Probe(kernels, failure, fault)


def probe_all(impls: Iterable[Implementation], specs: Mapping[str, Any], limits: Any) -> dict[str, Probe]:
    """Each implementation probed in a child process of its own (normbench.sandbox's, with its limits); a probe that
    timed out, crashed or broke the protocol shows nothing, and the implementation is planned as without the option."""
    import tempfile

    from normbench.sandbox import SandboxedFactory, _Child, child_output

    results: dict[str, Probe] = {}
    with tempfile.TemporaryDirectory(prefix="normbench-probe-") as scratch:
        for number, impl in enumerate(impls):
            if not isinstance(impl.factory, SandboxedFactory):
                continue
            output = child_output(Path(scratch), f"probe-{number}", impl.factory.source)
            child = _Child(_probe_child, (impl.factory.source, impl.name, specs[impl.family], limits), output)
            status, reply = child.request(..., limits.item_timeout)
            child.stop()
            try:
                results[impl.name] = _probe_reply(reply) if status == "reply" else Probe()
            except wire.ProtocolError:
                results[impl.name] = Probe()
    return results


def interpreter_skip_outcome(impl: Implementation, failure: str) -> Outcome:
    """The one skipped outcome of an implementation whose kernels Triton's interpreter cannot run (one item per
    implementation, not a planned one: its record has no ulp field)."""
    return Outcome(test_id=f"{impl.family}[{impl.name}-{SKIP_PROPERTY}]", verdict=Verdict.SKIP,
                   summary=f"Triton's interpreter (--triton-interpret) cannot run it: {failure}; none of its items "
                           "were judged (on a CUDA machine, without --triton-interpret, they may be)",
                   key=ItemKey(impl.family, impl.name, SKIP_PROPERTY, "any", "any", "cpu", DEFAULT_VARIANT),
                   check=SKIP_PROPERTY, expect="holds", extra={"source": impl.source}, absent=frozenset({"ulp"}))


@dataclass
class InterpreterPlan:
    """What --triton-interpret changes in a run's plan (normbench.pytest_plugin.Plan)."""

    #: the one skipped outcome of each implementation the interpreter cannot run, by name: none of its items planned
    skips: dict[str, Outcome] = dataclasses.field(default_factory=dict)
    #: implementations judged through the interpreter whose bfloat16 items are skipped, with the reason
    no_bfloat16: dict[str, str] = dataclasses.field(default_factory=dict)

    def skip_reason(self, name: str, dtype: str) -> str | None:
        """Why an item of `name` in `dtype` is not judged under the interpreter, or None."""
        return self.no_bfloat16.get(name) if dtype == "bfloat16" else None


def plan_for_interpreter(registry: Registry, selected: Iterable[str], specs: Mapping[str, Any],
                         limits: Any) -> InterpreterPlan:
    """Probe the selected implementations (all when none is selected): those whose Triton kernels ran in the
    interpreter are judged on CPU in this run (their registry entry gains "cpu"); those it cannot run are one skip
    each; bfloat16 items are skipped where this triton's interpreter emulates bfloat16 wrongly."""
    chosen = set(selected)
    impls = [impl for name, impl in sorted(registry.implementations.items()) if not chosen or name in chosen]
    plan = InterpreterPlan()
    for name, result in probe_all(impls, specs, limits).items():
        impl = registry.implementations[name]
        if result.failure is not None:
            plan.skips[name] = interpreter_skip_outcome(impl, result.failure)
            continue
        if result.kernels and "cpu" not in impl.devices:
            registry.implementations[name] = dataclasses.replace(impl, devices=(*impl.devices, "cpu"))
        if result.kernels and result.bfloat16 is not None:
            plan.no_bfloat16[name] = result.bfloat16
    return plan
