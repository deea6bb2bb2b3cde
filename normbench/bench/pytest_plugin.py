"""pytest plugin for the throughput benchmarks: `pytest -p normbench.bench.pytest_plugin suite/benchmarks`.

Opt-in on purpose: a plain `pytest suite` never loads this plugin, so it never collects suite/benchmarks/bench_*.py
(those names do not match pytest's test_*.py) and stays fast. With the plugin, every case of the plan
(normbench.bench.harness) becomes one pytest-benchmark test. An implementation's case is timed in the
implementation's own process (normbench.bench.isolated: this process never imports a plugin) on the schedule
normbench calibrates (CPU: perf_counter; CUDA: CUDA events, L2 flushed before each round), checked against this
process's clock and the float64 truth (normbench.bench.trust: a figure that fails is recorded `untrusted` and never
ranked), and its rounds are replayed into `benchmark.pedantic` (ReplayClock); the harness's own copy is timed here.
So pytest-benchmark's JSON (`--benchmark-json`) is written as usual and `pytest-benchmark compare` works on it;
normbench's own record
goes to <results-dir>/raw/<machine-id>/benchmark-<device>.json (./normbench-results unless --results-dir) and the
leaderboard is re-rendered.

Benchmarks refuse to run under pytest-xdist: workers would share the cores and memory bandwidth being measured.

`--bench-variant compile|onnxruntime` (repeatable, beside the default eager) times every case also as deployed
(normbench.bench.variants_bench); the build (compile, export) is paid once per case and pass (one implementation's
process is alive at a time) before anything is timed, and recorded as `build_s`. A variant that cannot be built
is one skipped case with the reason.

`--bench-crosscheck` times each CPU case's table rounds interleaved with rounds of normbench's own loop and of
torch.utils.benchmark's `Timer.timeit`, all on the table's schedule (the same calls per round): before each round
pytest-benchmark times, the clock's hook runs one round of each other timer (InterleavingClock), so the three
medians come from the same seconds of a shared machine, in every pass of --bench-rounds as the table's pooled
median does. The table's median is printed beside both; the three must agree within 5% (CROSSCHECK_TOLERANCE).
On a GPU the cross-check runs in blocks right after the table.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

from normbench import deploy
from normbench.bench.allocator import DEFAULT as MALLOC_DEFAULT
from normbench.bench.allocator import pin_malloc
from normbench.bench.crosscheck import (  # noqa: F401 - re-exported: the names this module has always offered
    CROSSCHECK_BLOCKS,
    CROSSCHECK_TOLERANCE,
    Interleaver,
    crosscheck,
    interleaved_result,
    median_notch,
    medians_consistent,
)
from normbench.bench.harness import (
    PASSES,
    ROOFLINE_FAMILY,
    BenchCase,
    BenchPlan,
    parse_shape,
    peak_memory_bytes,
    plan_cases,
    prepare,
    result_entry,
)
from normbench.bench.isolated import BenchChild, BenchChildError, CaseUnavailable
from normbench.bench.roofline import (
    Roofline,
    RooflineLevel,
    cpu_threads_available,
    default_copy_bytes,
    measure_roofline,
    size_matched,
)
from normbench.bench.timer import (
    GpuRoundSetup,
    Timing,
    calibrate,
    clock_for,
    cuda_event_clock,
)
from normbench.bench.trust import (
    beyond_roofline,
    merge_clock_checks,
    merge_output_checks,
    trusted,
    untrusted_reason,
)
from normbench.implementation import ALL_DTYPES
from normbench.publish.terminal import bench_summary_lines
from normbench.registry import Registry
from normbench.sandbox import Limits, _scratch_dir, discover_isolated
from normbench.spec import Spec, load_specs
from normbench.verdicts import did_you_mean

XDIST_REFUSAL = ("normbench benchmarks never run under pytest-xdist (-n / --dist): parallel workers share the cores "
                 "and the memory bandwidth being measured, so every number would be wrong. Run them without -n.")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("normbench benchmarks")
    group.addoption("--bench-family", action="append", default=[], metavar="FAMILY",
                    help="benchmark only this family (repeatable)")
    group.addoption("--bench-dtype", action="append", default=[], choices=list(ALL_DTYPES),
                    help="benchmark only this dtype (repeatable; default: the spec's)")
    group.addoption("--bench-pass", action="append", default=[], choices=list(PASSES),
                    help="benchmark only this pass (repeatable; default: the spec's)")
    group.addoption("--bench-shape", action="append", default=[], type=parse_shape, metavar="AxB[xC]",
                    help="replace the spec's shapes (repeatable); a family whose layout takes no shape of that rank "
                         "is left out")
    group.addoption("--bench-threads", type=int, default=None, metavar="N",
                    help="torch CPU threads while benchmarking (default: every core this process may use)")
    group.addoption("--bench-budget", type=float, default=None, metavar="SECONDS",
                    help="timing budget per case (default 0.25 on CPU, 1 with --bench-crosscheck, 0.1 on CUDA); at "
                         "least 10 rounds are timed")
    group.addoption("--bench-include-references", action="store_true",
                    help="also time the float64 reference implementations (not contenders: left out by default)")
    group.addoption("--bench-rounds", type=int, default=1, metavar="R",
                    help="time every case in R interleaved passes over the whole plan, each with budget/R, and pool "
                         "the samples (asv's rounds): a drift of a shared machine then widens the spread instead of "
                         "moving whichever cases it happened to hit (default 1)")
    group.addoption("--bench-crosscheck", action="store_true",
                    help="also time every case with torch.utils.benchmark and record both medians (the CPU budget "
                         "per case becomes 1 s unless --bench-budget is given: medians to compare need samples)")
    group.addoption("--bench-malloc", choices=["steady", "default"], default="steady",
                    help="CPU allocator state: steady (default) tells glibc's malloc to keep freed memory, so no "
                         "call pays page faults another call's history decided (normbench.bench.allocator); "
                         "default keeps glibc's thresholds")
    group.addoption("--bench-roofline-mib", type=float, default=None, metavar="MIB",
                    help="size of the roofline copy (default: 8x the last-level cache, >= 256 MiB CPU / 1 GiB GPU)")
    group.addoption("--bench-variant", action="append", default=[], choices=deploy.names(aliases=True),
                    help="time every case as deployed this way (repeatable, e.g. eager + compile; default eager "
                         "only): compile = torch.compile (Inductor, build paid once, never timed), export (or its "
                         "older name onnxruntime) = torch.onnx export run by onnxruntime on the CPU (inference "
                         "only)")
    group.addoption("--bench-progress", action="store_true",
                    help="draw a progress bar instead of one character per case")


def _option(config: pytest.Config, name: str, default: Any = None) -> Any:
    """Options shared with the conformance plugin (--impl, --device, --results-dir, ...), absent without it."""
    try:
        value = config.getoption(name)
    except (ValueError, AttributeError):
        return default
    return default if value is None else value


def _xdist_active(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER"):
        return True
    return bool(_option(config, "numprocesses", 0)) or _option(config, "dist", "no") != "no"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if _xdist_active(config):
        raise pytest.UsageError(XDIST_REFUSAL)
    config._normbench_bench = BenchSession(config)  # type: ignore[attr-defined]


class BenchSession:
    """State of one benchmark session: the plan, the rooflines, the results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        opt = config.option
        self.threads = opt.bench_threads or cpu_threads_available()
        self.budget = opt.bench_budget
        self.crosscheck = opt.bench_crosscheck
        if opt.bench_rounds < 1:
            raise pytest.UsageError(f"--bench-rounds must be >= 1, got {opt.bench_rounds}")
        self.passes = opt.bench_rounds
        #: per case id: the per-call samples of every pass so far, the schedule and the peak memory of pass 1
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.schedules: dict[str, Any] = {}
        self.peaks: dict[str, int | None] = {}
        self.roofline_bytes = int(opt.bench_roofline_mib * 2**20) if opt.bench_roofline_mib else None
        self.rooflines: dict[str, Roofline] = {}
        self.results: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.failures: list[str] = []
        self._plan: BenchPlan | None = None
        self.specs: dict[str, Spec] = {}
        self.registry: Registry | None = None
        self.problems: list[str] = []
        self.done = 0
        self.variants = list(dict.fromkeys(deploy.canonical(v) for v in opt.bench_variant)) or [deploy.DEFAULT.name]
        #: --bench-crosscheck on a CPU: per case id, the other timers' samples of every pass so far
        self.interleavers: dict[str, Interleaver] = {}
        self.wait_policy = os.environ.get("OMP_WAIT_POLICY", "") or "unset"
        self.malloc = pin_malloc() if opt.bench_malloc == "steady" else MALLOC_DEFAULT
        #: size-matched copy bounds, per device and working set, measured once per session
        self.bounds: dict[tuple[str, int], RooflineLevel] = {}
        self.bound_passes: set[tuple[str, int, int]] = set()
        self.load_at_start = _load_average()
        #: the live timing process (one implementation at a time, normbench.bench.isolated) and its scratch folder
        self.child: BenchChild | None = None
        self.scratch: Path | None = None
        self.limits = Limits()
        #: per case id: every pass's clock check, output check and cross-check rounds, pooled like the samples
        self.clock_checks: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.output_checks: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.interleaved: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"ours": [], "theirs": []})

    @property
    def devices(self) -> list[str]:
        # cuda is always asked for by default: where it is missing it becomes one skipped item saying why,
        # so a CPU-only run shows that the GPU path exists and was not silently dropped.
        wanted = _option(self.config, "device", []) or ["cpu", "cuda"]
        return list(dict.fromkeys(wanted))

    def plan(self) -> BenchPlan:
        if self._plan is None:
            opt = self.config.option
            # Check names are not needed to time a module: a spec naming a check under construction still loads.
            spec_set = load_specs(_option(self.config, "spec_dir", []), known_checks=None)
            self.specs = spec_set.specs
            # Imported in child processes only: the benchmark process never runs a plugin's code.
            self.registry = discover_isolated(_option(self.config, "impl_path", []), families=spec_set.specs,
                                              include_entry_points=not _option(self.config, "no_entry_points",
                                                                               False))
            self.problems = [f"bad spec: {e}" for e in spec_set.errors]
            self.problems += [f"broken plugin: {e}" for e in self.registry.errors]
            impls = _option(self.config, "impl", [])
            unknown = sorted(set(impls) - set(self.registry.implementations))
            self.problems += [f"--impl {name!r} matches no implementation"
                              f"{did_you_mean(name, self.registry.implementations)}" for name in unknown]
            sizes = {d: self.roofline_bytes or self._default_copy_bytes(d) for d in self.devices}
            self._plan = plan_cases(self.specs, self.registry, implementations=impls, families=opt.bench_family,
                                    dtypes=opt.bench_dtype, passes=opt.bench_pass, shapes=opt.bench_shape,
                                    devices=[d for d in self.devices if self._device_available(d)],
                                    include_references=opt.bench_include_references, roofline_bytes=sizes,
                                    variants=self.variants)
            self.problems += self._plan.errors
        return self._plan

    @staticmethod
    def _device_available(device: str) -> bool:
        return torch.device(device).type != "cuda" or torch.cuda.is_available()

    def _default_copy_bytes(self, device: str) -> int:
        return default_copy_bytes(device) if self._device_available(device) else 0

    def roofline(self, device: str) -> Roofline:
        """Measured once per device and session, with the benchmark thread count, before its first case."""
        if device not in self.rooflines:
            torch.set_num_threads(self.threads)
            self.rooflines[device] = measure_roofline(device, self.roofline_bytes)
        return self.rooflines[device]

    def bound(self, device: str, working_set: int, round_index: int = 0) -> RooflineLevel:
        """The size-matched copy bound, re-measured once per pass (--bench-rounds) and the fastest kept: a bound is
        what the machine sustains, and one measured in a loaded moment would let a case measured in a quiet one
        read above 100%."""
        key = (device, working_set)
        if (device, working_set, round_index) not in self.bound_passes:
            self.bound_passes.add((device, working_set, round_index))
            fresh = size_matched(self.roofline(device), working_set, device)
            if key not in self.bounds or fresh.copy_gbps > self.bounds[key].copy_gbps:
                self.bounds[key] = fresh
        return self.bounds[key]

    def run(self, benchmark: Any, case: BenchCase, round_index: int = 0) -> dict[str, Any]:
        """Time one pass of one case and record it, pooled with its earlier passes: an implementation in its own
        process, checked by this one (run_isolated); the harness's own copy here."""
        if case.family != ROOFLINE_FAMILY:
            return self.run_isolated(benchmark, case, round_index)
        return self.run_in_process(benchmark, case, round_index)

    def child_for(self, case: BenchCase) -> BenchChild:
        """The timing process of the case's implementation: one live at a time, as the cases come grouped."""
        impl = self.registry.implementations.get(case.implementation) if self.registry else None
        if impl is None:
            pytest.fail(f"{case.id}: no implementation named {case.implementation!r}", pytrace=False)
        if self.child is not None and self.child.impl.name != impl.name:
            self.close_child()
        if self.child is None:
            self.scratch = self.scratch or _scratch_dir()
            self.child = BenchChild(impl, self.specs, self.limits, self.scratch)
        return self.child

    def close_child(self) -> None:
        if self.child is not None:
            self.child.close()
            self.child = None

    def run_isolated(self, benchmark: Any, case: BenchCase, round_index: int) -> dict[str, Any]:
        """Time one pass of a case in the implementation's process (normbench.bench.isolated): the child's per-round
        times are replayed into pytest-benchmark (its statistics and JSON), the parent's clock and the output check
        decide whether the figure is trusted (normbench.bench.trust)."""
        torch.set_num_threads(self.threads)
        roofline = self.roofline(case.device)
        child = self.child_for(case)
        budget = (self.budget or default_budget(case.device, self.crosscheck)) / self.passes
        try:
            timed = child.time_case(case, threads=self.threads, budget_s=budget, schedule=self.schedules.get(case.id),
                                    crosscheck=self.crosscheck,
                                    steady_malloc=self.config.option.bench_malloc == "steady")
        except CaseUnavailable as exc:
            pytest.skip(f"{case.variant} variant of {case.implementation} ({case.dtype}, {case.pass_name}) cannot be "
                        f"built: {exc}")
        except BenchChildError as exc:
            self.close_child()
            pytest.fail(str(exc), pytrace=False)
        schedule = self.schedules[case.id] = timed.schedule
        # measured here in this process while the child waits, so it never overlaps a timed round
        bound = self.bound(case.device, timed.traffic.total, round_index)
        benchmark.extra_info.update(normbench_id=case.id, family=case.family, implementation=case.implementation,
                                    shape=list(case.shape), dtype=case.dtype, pass_name=case.pass_name,
                                    device=case.device, bytes=timed.traffic.total, threads=self.threads,
                                    timed_in="the implementation's process")
        replay_clock.load([t * schedule.iterations for t in timed.samples])
        benchmark.pedantic(_nothing, rounds=len(timed.samples), iterations=schedule.iterations, warmup_rounds=0)
        if benchmark.stats is None:
            pytest.skip("pytest-benchmark is disabled (--benchmark-disable / --benchmark-skip): nothing was timed")
        pooled = self.samples[case.id]
        pooled.extend(float(t) for t in benchmark.stats.stats.data)
        summary = Timing(tuple(pooled), schedule.iterations).summary()
        summary["passes"] = round_index + 1
        last = round_index == self.passes - 1
        timeout = self.limits.item_timeout
        check = None
        rounds = self.interleaved[case.id]
        rounds["ours"] += timed.interleaved.get("ours", [])
        rounds["theirs"] += timed.interleaved.get("theirs", [])
        if self.crosscheck and last:
            try:
                if torch.device(case.device).type == "cpu":
                    pass_median = statistics.median(timed.samples)
                    check = interleaved_result(rounds["ours"], rounds["theirs"], schedule.iterations,
                                               summary["median_s"], pass_median, pass_samples=list(pooled))
                else:
                    check = child.crosscheck(summary["median_s"], timeout)
            except BenchChildError as exc:
                self.close_child()
                pytest.fail(str(exc), pytrace=False)
        if case.id not in self.peaks:
            try:
                self.peaks[case.id] = child.peak_memory(timeout)
            except BenchChildError as exc:
                self.close_child()
                pytest.fail(str(exc), pytrace=False)
        timer = "cuda_event" if torch.device(case.device).type == "cuda" else "perf_counter"
        entry = result_entry(timed, summary, roofline, self.peaks[case.id], timer=timer,
                             flush_l2=schedule.flush_l2, bound=bound)
        entry.update(gpu_hold_s=schedule.hold_s, omp_wait_policy=self.wait_policy, malloc=self.malloc,
                     timed_in="implementation process")
        self.clock_checks[case.id].append(timed.clock_check)
        self.output_checks[case.id].append(timed.output_check)
        entry["clock_check"] = merge_clock_checks(self.clock_checks[case.id])
        entry["output_check"] = merge_output_checks(self.output_checks[case.id])
        if check is not None:
            entry["crosscheck"] = check
        reason = untrusted_reason(entry)
        if reason:
            entry["untrusted"] = reason
        benchmark.extra_info.update(gbps=entry["gbps"], roofline_pct=entry["roofline_pct"],
                                    peak_mem_bytes=entry["peak_mem_bytes"], untrusted=reason)
        self.results[torch.device(case.device).type][case.id] = entry
        return entry

    def run_in_process(self, benchmark: Any, case: BenchCase, round_index: int = 0) -> dict[str, Any]:
        """The harness's own copy (no plugin code): timed by pytest-benchmark in this process."""
        torch.set_num_threads(self.threads)
        roofline = self.roofline(case.device)
        prepared = prepare(case)
        budget = (self.budget or default_budget(case.device, self.crosscheck)) / self.passes
        schedule = self.schedules.get(case.id) or calibrate(prepared.fn, case.device, budget_s=budget)
        self.schedules[case.id] = schedule
        flush = GpuRoundSetup(case.device, schedule.hold_s) if schedule.flush_l2 else None
        benchmark.extra_info.update(normbench_id=case.id, family=case.family, implementation=case.implementation,
                                    shape=list(case.shape), dtype=case.dtype, pass_name=case.pass_name,
                                    device=case.device, bytes=prepared.traffic.total, threads=self.threads)
        cuda_event_clock.reset()
        bound = self.bound(case.device, prepared.traffic.total, round_index)  # before the case, never inside it
        last = round_index == self.passes - 1
        interleaver = None
        if self.crosscheck and torch.device(case.device).type == "cpu":
            # Every pass, not only the last: the table's median pools the samples of all passes, so the
            # cross-check's must come from the same seconds (a shared machine drifts between passes).
            interleaver = self.interleavers.get(case.id)
            if interleaver is None:
                interleaver = self.interleavers[case.id] = Interleaver(prepared.fn, schedule.iterations,
                                                                       schedule.warmup_rounds)
            else:
                interleaver.begin_pass(prepared.fn, schedule.warmup_rounds)
            interleaving_clock.hook = interleaver.round
        try:
            benchmark.pedantic(_discarding(prepared.fn), setup=flush, rounds=schedule.rounds,
                               iterations=schedule.iterations, warmup_rounds=schedule.warmup_rounds)
        finally:
            interleaving_clock.hook = None
            if interleaver is not None:
                interleaver.end_pass()
        if benchmark.stats is None:
            pytest.skip("pytest-benchmark is disabled (--benchmark-disable / --benchmark-skip): nothing was timed")
        pooled = self.samples[case.id]
        pooled.extend(float(t) for t in benchmark.stats.stats.data)
        summary = Timing(tuple(pooled), schedule.iterations).summary()
        summary["passes"] = round_index + 1
        check = None
        if interleaver is not None and last:
            pass_median = statistics.median(float(t) for t in benchmark.stats.stats.data)
            check = interleaver.result(summary["median_s"], pass_median, pass_samples=list(pooled))
        elif self.crosscheck and last:
            # GPU: right after the table's own timing, before the profiler below runs, on the table's schedule
            check = crosscheck(prepared.fn, case.device, schedule, summary["median_s"])
        if case.id not in self.peaks:
            self.peaks[case.id] = peak_memory_bytes(prepared.fn, case.device)
        peak = self.peaks[case.id]
        timer = "cuda_event" if clock_for(case.device) is cuda_event_clock else "perf_counter"
        entry = result_entry(prepared, summary, roofline, peak, timer=timer, flush_l2=schedule.flush_l2,
                             bound=bound)
        entry["gpu_hold_s"] = schedule.hold_s
        entry["omp_wait_policy"] = self.wait_policy
        entry["malloc"] = self.malloc
        if check is not None:
            entry["crosscheck"] = check
        benchmark.extra_info.update(gbps=entry["gbps"], roofline_pct=entry["roofline_pct"],
                                    peak_mem_bytes=peak)
        self.results[torch.device(case.device).type][case.id] = entry
        return entry


#: the CPU budget per case under --bench-crosscheck: a shared 2-core machine spreads one case's rounds by ±15 %
#: (q1-q3), so the three medians of 0.25 s of rounds differed by 5-9 % within their notches (5 of 10 cases in
#: the issue's run); with 1 s each, 10 of 10 agreed within 5 %.
CROSSCHECK_CPU_BUDGET_S = 1.0


def default_budget(device: str, crosscheck: bool = False) -> float:
    """Seconds of timing per case when --bench-budget is not given."""
    if torch.device(device).type == "cuda":
        return 0.1
    return CROSSCHECK_CPU_BUDGET_S if crosscheck else 0.25


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _discarding(fn: Any) -> Any:
    """`fn` returning nothing. pytest-benchmark keeps a round's result alive until the next round's replaces it
    when a round is one call (not when it loops), so a norm's next output was allocated while the previous one was
    still held - a different allocator path (fresh pages) than in a loop, in `measure` or in torch.utils.benchmark,
    which free each output before the next call. Every timer now frees each output inside its timed region."""
    def call() -> None:
        fn()
    return call


class InterleavingClock:
    """The CPU benchmarks' clock (time.perf_counter) for pytest-benchmark, with a hook run before every start read.

    Reads come in (start, end) pairs around each timed round, as pytest-benchmark's runner makes them. When a hook
    is set (the cross-check), a start read first runs it - one round of each cross-check timer - and only then
    reads the clock, so the hook's time is never inside a table round, and the table's rounds and the
    cross-check's alternate round by round."""

    __name__ = "perf_counter"  # how pytest-benchmark names the timer in its JSON

    def __init__(self) -> None:
        self.hook: Any = None
        self._in_round = False

    def __call__(self) -> float:
        if not self._in_round and self.hook is not None:
            self.hook()
        self._in_round = not self._in_round
        return time.perf_counter()


interleaving_clock = InterleavingClock()


class ReplayClock:
    """pytest-benchmark's timer for a case timed in the implementation's process: the rounds it reported, replayed.

    Reads come in (start, end) pairs around each round pytest-benchmark "times" (a call of `_nothing`); an end read
    returns the start plus the next loaded round's duration, so pytest-benchmark's statistics and JSON hold exactly
    the child's rounds, which the parent has checked against its own clock (normbench.bench.trust)."""

    __name__ = "perf_counter_in_implementation_process"

    def __init__(self) -> None:
        self._pending: list[float] = []
        self._total = 0.0
        self._started = False

    def load(self, round_seconds: list[float]) -> None:
        self._pending, self._started = list(round_seconds), False

    def __call__(self) -> float:
        if self._started and self._pending:
            self._total += self._pending.pop(0)
        self._started = not self._started
        return self._total


replay_clock = ReplayClock()


def _nothing() -> None:
    """The target of a replayed round: the work ran in the implementation's process."""


def above_roofline(entries: Any) -> list[dict[str, Any]]:
    """Cases above the roofline that bounds them beyond the measurement noise (normbench.bench.trust)."""
    return [e for e in entries if beyond_roofline(e)]


def _session(config: pytest.Config) -> BenchSession:
    return config._normbench_bench  # type: ignore[attr-defined]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


class BenchProblem:
    """A requested case that cannot exist (bad spec, plugin or option): one failing item with the message."""

    def __init__(self, message: str) -> None:
        self.message = message


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_case" not in metafunc.fixturenames:
        return
    session = _session(metafunc.config)
    plan = session.plan()
    params = [pytest.param(BenchProblem(message), id=f"problem{i}") for i, message in enumerate(session.problems)]
    for device in session.devices:
        if not session._device_available(device):
            reason = (f"no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): "
                      f"the {device} benchmarks run where torch.cuda.is_available()")
            params.append(pytest.param(BenchProblem(reason), id=f"{device}-unavailable",
                                       marks=[pytest.mark.skip(reason=reason)]))
    # Pass-major order: every case once, then every case again (asv's interleaved rounds).
    for round_index in range(session.passes):
        for case in plan.cases:
            clock = replay_clock if case.family != ROOFLINE_FAMILY else (
                cuda_event_clock if torch.device(case.device).type == "cuda" else interleaving_clock)
            item_id = case.id if session.passes == 1 else f"{case.id}-pass{round_index + 1}"
            params.append(pytest.param(RoundOf(case, round_index), id=item_id,
                                       marks=[pytest.mark.benchmark(group=case.group, timer=clock)]))
    if not params:
        params.append(pytest.param(BenchProblem("no benchmark case matches the options (families with a "
                                                "`benchmark` key in their spec, --impl, --bench-*)"), id="empty"))
    metafunc.parametrize("bench_case", params)


@pytest.fixture(scope="session")
def normbench_bench(request: pytest.FixtureRequest) -> BenchSession:
    return _session(request.config)


class RoundOf:
    """One pass (round_index, from 0) of a case."""

    def __init__(self, case: BenchCase, round_index: int) -> None:
        self.case, self.round_index = case, round_index


def run_bench_case(benchmark: Any, bench_case: RoundOf | BenchProblem, session: BenchSession) -> None:
    """The body of suite/benchmarks' test: fail a problem item, time one pass of a case."""
    if isinstance(bench_case, BenchProblem):
        pytest.fail(bench_case.message, pytrace=False)
    session.run(benchmark, bench_case.case, bench_case.round_index)


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    if config.option.bench_progress and report.when == "call" and report.passed:
        return "passed", "", "PASSED"  # the progress bar says it
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _current_config
    if config is None or report.when != "call" or not config.option.bench_progress:
        return
    session = _session(config)
    session.done += 1
    total = len(session.plan().cases) * session.passes + len(session.problems)
    width = 30
    filled = int(width * session.done / max(total, 1))
    name = report.nodeid.split("[", 1)[-1].rstrip("]")
    line = f"\r[{'#' * filled}{'.' * (width - filled)}] {session.done}/{total} {name[:70]:<70}"
    stream = sys.stderr
    if stream.isatty():
        stream.write(line)
    elif session.done == total or session.done % max(total // 20, 1) == 0:
        stream.write(line.lstrip("\r") + "\n")
    stream.flush()


_current_config: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _current_config
    _current_config = session.config


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    bench = _session(config)
    bench.close_child()
    if bench.scratch is not None:
        import shutil

        shutil.rmtree(bench.scratch, ignore_errors=True)
    if not bench.results or _option(config, "no_record", False):
        return
    from normbench.publish import write_leaderboard
    from normbench.store.records import DEFAULT_RESULTS_DIR, benchmark_record
    from normbench.store.write import store_record

    results_dir = Path(_option(config, "results_dir", None) or config.invocation_params.dir / DEFAULT_RESULTS_DIR)
    written = []
    for device, entries in sorted(bench.results.items()):
        rooflines = [r for d, r in bench.rooflines.items() if torch.device(d).type == device]
        record = benchmark_record(device, list(entries.values()), rooflines[0].as_dict() if rooflines else None,
                                  bench.threads)
        record.update(omp_wait_policy=bench.wait_policy, load_average=bench.load_at_start, malloc=bench.malloc)
        path, _ = store_record(results_dir, record)
        written.append(path)
    write_leaderboard(results_dir)
    config._normbench_bench_written = written  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    bench = getattr(config, "_normbench_bench", None)
    if bench is None or not bench.results:
        return
    if config.option.bench_progress:
        sys.stderr.write("\n")
    terminalreporter.section("normbench benchmarks")
    load = f"load average {bench.load_at_start:.1f} at start" if bench.load_at_start is not None else "load unknown"
    terminalreporter.write_line(f"OMP_WAIT_POLICY={bench.wait_policy}; malloc: {bench.malloc}; {load} on "
                                f"{os.cpu_count()} CPUs"
                                + (" (a loaded machine: figures are noisy)" if (bench.load_at_start or 0) >
                                   (os.cpu_count() or 1) / 2 else ""))
    if bench.wait_policy == "unset" and "cpu" in bench.results:
        # Measured: with the default policy torch's multi-op CPU cases (torch.nn.RMSNorm, a two-pass LayerNorm)
        # read 2.2 to 5.7 ms for one 4096x1024 forward depending on the timer; with PASSIVE the timers agree.
        terminalreporter.write_line("OMP_WAIT_POLICY is unset: on a shared CPU a 2-thread OpenMP region may wait "
                                    "for a busy thread, so cases of several ops scatter by up to 2x (see "
                                    "docs/benchmarks.md); export OMP_WAIT_POLICY=PASSIVE before pytest, or use "
                                    "`normbench run`, which sets it", yellow=True)
    for device, roof in bench.rooflines.items():
        peak = f", nominal peak {roof.peak_gbps:.0f} GB/s ({roof.peak_source})" if roof.peak_gbps else ""
        terminalreporter.write_line(
            f"{device}: {roof.device_name}, {roof.threads} threads: copy roofline {roof.copy_gbps:.1f} GB/s "
            f"(q1-q3 {roof.copy_gbps_q1:.1f}-{roof.copy_gbps_q3:.1f}) on {roof.copy_bytes / 2**20:.0f} MiB{peak}")
        for level in roof.levels:
            holds = f"working sets up to {level.capacity_bytes / 2**20:g} MiB" if level.capacity_bytes else "beyond"
            terminalreporter.write_line(
                f"  {level.name:>4}: {level.copy_gbps:7.1f} GB/s (q1-q3 {level.copy_gbps_q1:.1f}-"
                f"{level.copy_gbps_q3:.1f}) measured at {level.working_set_bytes / 2**20:g} MiB; bounds {holds}")
    for device, entries in sorted(bench.results.items()):
        for e in entries.values():
            if e["family"] == ROOFLINE_FAMILY:
                terminalreporter.write_line(f"  harness copy of {e['numel'] * 4 / 2**20:.0f} MiB: {e['gbps']:.1f} "
                                            f"GB/s = {e['roofline_pct']:.0f}% of the {e['roofline_level']} roofline")
        norms = [e for e in entries.values() if e["family"] != ROOFLINE_FAMILY]
        ranked = trusted(norms)  # an untrusted figure is never "closest to the roofline"
        if norms:
            closest = "no trusted figure"
            if ranked:
                best = max(ranked, key=lambda e: e["roofline_pct"])
                closest = f"{best['id']} at {best['roofline_pct']:.0f}% of the {best['roofline_level']} roofline"
            terminalreporter.write_line(f"  {len(norms)} {device} cases; closest to the roofline: {closest}")
            for line in bench_summary_lines(norms, min(120, terminalreporter._tw.fullwidth) - 2):
                terminalreporter.write_line(f"  {line}")
        for e in above_roofline(entries.values()):
            terminalreporter.write_line(
                f"  ABOVE THE ROOFLINE beyond the noise: {e['id']} {e['gbps_q1']:.1f} GB/s at its slow quartile > "
                f"{e['roofline_level']} copy {e['roofline_gbps_q3']:.1f} GB/s at its fast quartile")
        for e in norms:
            if e.get("untrusted"):
                terminalreporter.write_line(f"  UNTRUSTED, not ranked: {e['id']}: {e['untrusted']}", red=True)
        for e in entries.values():
            if deploy.record_name(e) != deploy.DEFAULT.name:
                ops = e.get("variant_info", {}).get("onnx_ops")
                terminalreporter.write_line(f"  {e['id']}: built in {e['build_s']:.1f} s (not timed)"
                                            + (f"; ONNX ops {', '.join(ops)}" if ops else ""))
        for e in entries.values():
            check = e.get("crosscheck")
            if check and "table_median_s" in check:
                terminalreporter.write_line(
                    f"  crosscheck {e['id']}: table median {check['table_median_s'] * 1e3:.4f} ms, normbench "
                    f"interleaved {check['normbench_interleaved_median_s'] * 1e3:.4f} ms, torch.utils.benchmark "
                    f"{check['torch_utils_benchmark_median_s'] * 1e3:.4f} ms: spread {check['spread']:.1%} "
                    + ("agree" if check["agree"] else f"DISAGREE (> {check['tolerance']:.0%})"
                       + (", within the timers' own noise" if check.get("within_noise") else ", beyond the noise")))
        checks = [e["crosscheck"] for e in entries.values() if "table_median_s" in (e.get("crosscheck") or {})]
        if checks:
            bad = sum(not c["agree"] for c in checks)
            noisy = sum(not c["agree"] and bool(c.get("within_noise")) for c in checks)
            terminalreporter.write_line(f"  crosscheck: {len(checks) - bad} of {len(checks)} cases agree within "
                                        f"{CROSSCHECK_TOLERANCE:.0%}; of the others, {noisy} differ by no more than "
                                        f"the medians' ~95% notches (1.57·IQR/√n), {bad - noisy} beyond them")
    for path in getattr(config, "_normbench_bench_written", []):
        terminalreporter.write_line(f"results written to {path}")
