"""Benchmark cases (implementation × shape × dtype × pass × device) and how one case is prepared and recorded.

Independent of pytest: suite/benchmarks (through normbench.bench.pytest_plugin) times the prepared function with
pytest-benchmark, the claims lab and the tests call the same functions directly. Shapes, dtypes and passes come
from the family spec's `benchmark` key; a family without one is not benchmarked.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from normbench import deploy
from normbench.bench.bytes_model import Traffic, bytes_moved, copy_bytes
from normbench.bench.roofline import Roofline, RooflineLevel
from normbench.implementation import Implementation, ImplementationError
from normbench.registry import Registry
from normbench.spec import Spec
from normbench.store.records import utc_now

PASSES: tuple[str, ...] = ("forward", "backward", "forward+backward", "inference")
#: pseudo-family of the copy cases that check the harness against the roofline
ROOFLINE_FAMILY = "roofline"
COPY_PASS = "copy"


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """'1024x4096' -> (1024, 4096)."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} is not of the form 1024x4096") from None
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape {text!r} needs at least two positive dimensions")
    return shape


@dataclass(frozen=True)
class BenchCase:
    """One timed case; `id` is stable (results and `normbench compare` key on it)."""

    family: str
    implementation: str
    shape: tuple[int, ...]
    dtype: str
    pass_name: str
    device: str = "cpu"
    baseline: str | None = None
    #: how the module is deployed: a normbench.deploy name (an alias reads as its deployment); eager ids carry no
    #: suffix, the others their deployment's canonical name
    variant: str = deploy.DEFAULT.name

    @property
    def id(self) -> str:
        parts = [self.implementation, shape_text(self.shape), self.dtype]
        if self.pass_name != COPY_PASS:
            parts.append(self.pass_name)
        if torch.device(self.device).type != "cpu":
            parts.append(torch.device(self.device).type)
        if not self.deployment.default:
            parts.append(self.deployment.name)
        return f"{self.family}[{'-'.join(parts)}]"

    @property
    def deployment(self) -> deploy.Deployment:
        return deploy.get(self.variant)

    @property
    def group(self) -> str:
        """pytest-benchmark group: the implementations of one family on the same case, side by side."""
        return f"{self.family} {shape_text(self.shape)} {self.dtype} {self.pass_name} {self.device}"


@dataclass
class BenchPlan:
    cases: list[BenchCase] = field(default_factory=list)
    #: problems that make a requested case impossible (bad shape for a layout, unknown baseline): reported
    errors: list[str] = field(default_factory=list)


def _bench_settings(spec: Spec, device: str) -> dict[str, Any]:
    settings = {k: v for k, v in spec.benchmark.items() if k != "cuda"}
    if torch.device(device).type == "cuda":
        settings.update(spec.benchmark.get("cuda", {}))
    return settings


def plan_cases(specs: dict[str, Spec], registry: Registry, *, implementations: Iterable[str] = (),
               families: Iterable[str] = (), dtypes: Iterable[str] = (), passes: Iterable[str] = (),
               shapes: Iterable[tuple[int, ...]] = (), devices: Iterable[str] = ("cpu",),
               include_references: bool = False, copy_check: bool = True,
               roofline_bytes: dict[str, int] | None = None,
               variants: Iterable[str] = (deploy.DEFAULT.name,)) -> BenchPlan:
    """Every case the specs declare, narrowed by the filters; `shapes` replaces the spec's shapes (a shape whose
    rank the family's layout does not take is left out for that family). Every case is planned once per variant
    (normbench.deploy: eager, compile, export, an alias naming its deployment), the variants of one case next to
    each other."""
    chosen_variants = list(dict.fromkeys(deploy.canonical(v) for v in variants)) or [deploy.DEFAULT.name]
    chosen_impls, chosen_families = set(implementations), set(families)
    chosen_dtypes, chosen_passes, override = set(dtypes), set(passes), [tuple(s) for s in shapes]
    plan = BenchPlan()
    for device in devices:
        largest: int = 0
        cases: list[BenchCase] = []
        for impl in sorted(registry.implementations.values(), key=lambda i: (i.family, i.name)):
            spec = specs.get(impl.family)
            if spec is None or not spec.benchmark:
                continue
            if chosen_impls and impl.name not in chosen_impls:
                continue
            if chosen_families and impl.family not in chosen_families:
                continue
            if "reference" in impl.tags and not include_references and impl.name not in chosen_impls:
                continue  # the float64 truth is not a contender; --bench-include-references times it anyway
            if device not in impl.devices and torch.device(device).type not in impl.devices:
                continue
            settings = _bench_settings(spec, device)
            baseline = settings.get("baseline")
            if baseline is not None and baseline not in registry.implementations:
                plan.errors.append(f"{spec.path}: benchmark.baseline {baseline!r} names no implementation")
                baseline = None
            family_shapes = override or [tuple(s) for s in settings["shapes"]]
            for shape in family_shapes:
                if len(shape) not in spec.layout.ranks:
                    if not override:
                        plan.errors.append(f"{spec.path}: benchmark shape {list(shape)} has rank {len(shape)}; "
                                           f"layout.ranks allows {list(spec.layout.ranks)}")
                    continue
                for dtype in settings.get("dtypes", ["float32"]):
                    if dtype not in impl.dtypes or (chosen_dtypes and dtype not in chosen_dtypes):
                        continue
                    for pass_name in settings.get("passes", PASSES):
                        if chosen_passes and pass_name not in chosen_passes:
                            continue
                        cases.extend(BenchCase(impl.family, impl.name, shape, dtype, pass_name, device, baseline,
                                               variant) for variant in chosen_variants)
                        largest = max(largest, math.prod(shape))
        if copy_check and cases:
            # The harness timing a plain copy: at the roofline's size it must reach ~100% of the measured copy
            # bandwidth (no harness overhead hides in the numbers); at the largest norm shape it shows what
            # "100%" means for shapes of that size (cache effects included).
            sizes = {(roofline_bytes or {}).get(device) or 0, largest * 4}
            plan.cases.extend(BenchCase(ROOFLINE_FAMILY, "copy", (nbytes // 4,), "float32", COPY_PASS, device)
                              for nbytes in sorted(s for s in sizes if s))
        plan.cases.extend(cases)
    return plan


@dataclass
class Prepared:
    """A case ready to time: `fn` runs one call of the pass."""

    case: BenchCase
    fn: Callable[[], Any]
    traffic: Traffic
    x: torch.Tensor
    module: nn.Module | None
    features: int
    reduce: str
    #: seconds spent building the variant (compiling, exporting), paid before anything is timed
    build_s: float = 0.0
    variant_info: dict[str, Any] = field(default_factory=dict)
    #: the upstream gradient of the backward passes (None otherwise)
    dy: torch.Tensor | None = None
    #: what a round on a fresh input needs (`stage(x, dy)`: the input, and for the backward pass its graph, built
    #: untimed), and `use(staged)` makes `fn` run on it: the benchmark child stages every round of a block before
    #: the block is timed, so no round reuses the tensor of the one before (normbench.bench.isolated)
    stage: Callable[[torch.Tensor, torch.Tensor | None], dict[str, Any]] = field(
        default=lambda x, dy=None: {"x": x})
    use: Callable[[dict[str, Any]], None] = field(default=lambda staged: None)

    @property
    def numel(self) -> int:
        return self.x.numel()


def _call(impl: Implementation, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = module(x)
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # fused norm+residual modules return (normed, residual)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ImplementationError(f"implementation {impl.name!r}: forward returned {got} for an input of shape "
                                  f"{tuple(x.shape)}")
    return out


def prepare(case: BenchCase, impl: Implementation | None = None, spec: Spec | None = None,
            seed: int = 0) -> Prepared:
    """Build the module and inputs of `case` on its device and dtype, and the function that runs its pass."""
    device, dtype = torch.device(case.device), getattr(torch, case.dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    if case.family == ROOFLINE_FAMILY:
        src = torch.randn(case.shape, generator=gen, device=device, dtype=dtype)
        dst = torch.empty_like(src)
        traffic = Traffic(copy_bytes(src), 0, 0, copy_bytes(src))
        return Prepared(case, lambda: dst.copy_(src), traffic, src, None, case.shape[-1], "copy")
    if impl is None or spec is None:
        raise ValueError(f"{case.id}: a norm case needs its implementation and spec")
    features = case.shape[spec.layout.features_axis]
    module = impl.build(features, spec.default_params()).to(device=device, dtype=dtype)
    x = torch.randn(input_shape(case, impl), generator=gen, device=device, dtype=dtype)
    deployment = case.deployment
    traffic = bytes_moved(x, module, "inference" if deployment.inference_only else case.pass_name)
    # What every timed call reads: the current input (and, for the backward passes, the graph and the upstream
    # gradient), replaced between rounds by `use`.
    now: dict[str, Any] = {"x": x}
    if deployment.inference_only:
        # no autograd: the forward pass is the eval-mode inference of the deployed graph
        built = deployment.build(module, x, pass_name=case.pass_name)
        call = built.call
        return Prepared(case, lambda: call(now["x"]), traffic, x, module, features, spec.layout.reduce,
                        built.build_s, built.info, use=now.update)
    eager = module
    built = deploy.DEFAULT.build(module, x)
    if not deployment.default:
        module.train(case.pass_name != "inference")
        if case.pass_name != "inference":
            x.requires_grad_(True)
        built = deployment.build(module, x, pass_name=case.pass_name)
        module = built.call  # type: ignore[assignment] # the compiled module, called exactly like the eager one
    if case.pass_name == "inference":
        eager.eval()
        with torch.inference_mode():
            _call(impl, module, x)

        def fn() -> torch.Tensor:
            with torch.inference_mode():
                return module(now["x"])

        return Prepared(case, fn, traffic, x, eager, features, spec.layout.reduce, built.build_s, built.info,
                        use=now.update)
    eager.train()
    x.requires_grad_(True)
    params = [p for p in eager.parameters() if p.requires_grad]
    out = _call(impl, module, x)
    now.update(leaves=[x, *params], out=out, dy=torch.randn(out.shape, generator=gen, device=device, dtype=dtype))
    first = _first_tensor
    if case.pass_name == "forward":
        def fn() -> Any:
            return module(now["x"])
    elif case.pass_name == "backward":
        def fn() -> Any:
            return torch.autograd.grad(now["out"], now["leaves"], now["dy"], retain_graph=True, allow_unused=True)
    elif case.pass_name == "forward+backward":
        def fn() -> Any:
            return torch.autograd.grad(first(module(now["x"])), now["leaves"], now["dy"], allow_unused=True)
    else:
        raise ValueError(f"unknown pass {case.pass_name!r}; known: {list(PASSES)}")

    def stage(new: torch.Tensor, dy: torch.Tensor | None = None) -> dict[str, Any]:
        new.requires_grad_(True)
        staged = {"x": new, "leaves": [new, *params], "dy": now["dy"] if dy is None else dy}
        if case.pass_name == "backward":
            staged["out"] = first(module(new))  # the graph the timed backward runs through
        return staged

    return Prepared(case, fn, traffic, x, eager, features, spec.layout.reduce, built.build_s, built.info,
                    dy=now["dy"], stage=stage, use=now.update)


def input_shape(case: BenchCase, impl: Implementation) -> tuple[int, ...]:
    """The shape the module is called with: a time-major (TBC) module gets (T, B, C), so no transpose is timed."""
    shape = case.shape
    if impl.token_layout == "TBC" and len(shape) == 3:
        return (shape[1], shape[0], shape[2])
    return tuple(shape)


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side prints start/stop lines on fd 2; keep them out of the reports."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory_bytes(fn: Callable[[], Any], device: str) -> int | None:
    """Peak memory allocated above the level before the call, during one call (its outputs included).

    CUDA: the caching allocator's peak counter. CPU: torch's profiler with memory profiling, whose allocation
    events are replayed in time order (the CPU allocator keeps no peak counter of its own)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return int(peak)


class CaseFacts(Protocol):
    """What a record needs of a timed case: a `Prepared` in this process, or what the parent knows of a case timed in
    an implementation's process (normbench.bench.isolated.TimedCase)."""

    case: BenchCase
    traffic: Traffic
    features: int
    reduce: str
    build_s: float
    variant_info: dict[str, Any]

    @property
    def numel(self) -> int: ...


def result_entry(prepared: CaseFacts, summary: dict[str, float | int], roofline: Roofline,
                 peak_mem: int | None, *, timer: str, flush_l2: bool,
                 bound: RooflineLevel | None = None) -> dict[str, Any]:
    """What results/ stores for one case: the timing statistics and everything derived from them.

    % roofline is against `bound` (normbench.bench.roofline.size_matched: a copy of the case's working set, its
    compulsory bytes, named after the memory level that holds it), else against the level the working set fits
    in; `dram_pct` keeps the figure against the DRAM copy."""
    case, traffic = prepared.case, prepared.traffic
    median, q1, q3 = float(summary["median_s"]), float(summary["q1_s"]), float(summary["q3_s"])
    gbps = traffic.total / median / 1e9
    level = bound or roofline.bounding_level(traffic.total)
    entry: dict[str, Any] = {
        "id": case.id, "family": case.family, "implementation": case.implementation, "shape": list(case.shape),
        "dtype": case.dtype, "pass": case.pass_name, "device": torch.device(case.device).type,
        "variant": case.deployment.name, "build_s": prepared.build_s, "variant_info": prepared.variant_info,
        "baseline": case.baseline, "features": prepared.features, "numel": prepared.numel,
        "reduce": prepared.reduce, **summary,
        "bytes": traffic.total,
        "bytes_detail": {"x": traffic.x_bytes, "params": traffic.param_bytes, "state": traffic.state_bytes},
        "gbps": gbps, "gbps_q1": traffic.total / q3 / 1e9 if q3 else gbps,
        "gbps_q3": traffic.total / q1 / 1e9 if q1 else gbps,
        "roofline_gbps": level.copy_gbps, "roofline_pct": 100.0 * gbps / level.copy_gbps,
        "roofline_level": level.name, "roofline_gbps_q3": level.copy_gbps_q3,
        "roofline_working_set_bytes": level.working_set_bytes,
        "dram_gbps": roofline.copy_gbps, "dram_pct": 100.0 * gbps / roofline.copy_gbps,
        "peak_gbps": roofline.peak_gbps,
        "peak_pct": 100.0 * gbps / roofline.peak_gbps if roofline.peak_gbps else None,
        "peak_mem_bytes": peak_mem, "threads": torch.get_num_threads(), "timer": timer, "l2_flush": flush_l2,
        "device_name": roofline.device_name,
        "measured_utc": utc_now(),
    }
    return entry
