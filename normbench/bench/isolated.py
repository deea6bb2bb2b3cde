"""Benchmarks timed in the implementation's own process, checked by the benchmark process.

The benchmark process (pytest with normbench.bench.pytest_plugin) never imports a plugin. Each implementation runs
in a child forked from the sandbox's forkserver (normbench.sandbox), which builds the module, calibrates, warms up
and times rounds of calls, and reports its per-round times; what it sends back is data-only JSON (normbench.wire)
and raw tensor bytes read into a fresh buffer, never a pickle. The child is the plugin's process, so whatever it
reports may be forged; the parent therefore

- times every block of rounds on its own wall clock (time.perf_counter_ns around the request and the reply), less
  the measured cost of an empty block, and compares it with the time the child accounts for
  (normbench.bench.trust.clock_agreement): a plugin that slows the clock it is timed with is caught;
- gives every round a fresh input: the parent draws one base input per case and ships it once, and each round of a
  block runs on the base's rows (dim 0) in an order drawn from a seed the parent picks per round, staged by the
  child before the parent starts its clock. Every family normbench benchmarks is equivariant under a permutation
  of dim 0 (per-token statistics, or batch statistics that do not depend on the order), so the truth of a round
  is the base's float64 truth in the same order, computed once in the parent;
- after each block, asks for a few rows, chosen then, of the first timed call's output of every round (of dx for
  the backward passes), and compares them with that truth under the spec's tolerance: a cache or a stale result
  differs (normbench.bench.trust.output_reason). The parent's reference is normbench.reference's, loaded with the
  float64 parameters and state of the module, as the conformance checks' `reference_like` builds them.

The output check is not applied where the truth is not the base's in the new order: a module whose layout differs
from its family's (time-major, channels-first), and a train-mode pass whose truth depends on the
running state that every call moves (PowerNorm's, not BatchNorm's); the record says so.
"""

from __future__ import annotations

import gc
import math
import os
import random
import statistics
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from normbench import wire
from normbench.bench.bytes_model import PARAM_TRAFFIC, STATE_TRAFFIC, X_TRAFFIC, Traffic
from normbench.bench.harness import BenchCase, input_shape
from normbench.bench.timer import Schedule
from normbench.bench.trust import BLOCK_MIN_S, Block, clock_agreement
from normbench.implementation import Implementation
from normbench.sandbox import Limits, SandboxedFactory, _Child, _excerpt, child_output, item_time_limit, source_label

#: rows of each round's checked output the parent compares with the truth
CHECK_ROWS = 4
#: round trips of an empty block whose median is the overhead subtracted from every block
OVERHEAD_SAMPLES = 5
#: the most rounds in one block, whatever the estimate
MAX_BLOCK_ROUNDS = 256
#: the most memory the staged inputs and kept outputs of one block may hold in the child: a block of a large case
#: is shorter (fewer, longer rounds) rather than gigabytes
MAX_BLOCK_BYTES = 512 << 20
#: tensor dtypes the child may send
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: what a schedule the child proposes may ask for (calibrate's own limits: at most 2000 rounds)
MAX_SCHEDULE = {"warmup_rounds": 100, "rounds": 2000, "iterations": 10_000_000}


class BenchChildError(RuntimeError):
    """The implementation's process failed, broke the protocol or could not time the case; the text says why."""


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()


def send_tensor(conn: Any, t: torch.Tensor) -> None:
    """A header (dtype, shape) as JSON, then the raw bytes: nothing a receiver must unpickle."""
    wire.send(conn, [str(t.dtype).removeprefix("torch."), list(t.shape)])
    conn.send_bytes(_tensor_bytes(t))


def receive_tensor(conn: Any, dtype: str | None, shape: tuple[int, ...], what: str,
                   timeout: float | None = None) -> torch.Tensor:
    """A plain tensor of exactly `shape` and `dtype` (None: any floating dtype of _DTYPES), copied into memory the
    sender cannot reach; ProtocolError otherwise, TimeoutError when a part does not arrive within `timeout` s."""
    _wait(conn, timeout, what)
    header = wire.receive(conn)
    if not (isinstance(header, list) and len(header) == 2 and header[1] == list(shape)
            and header[0] in _DTYPES and (dtype is None or header[0] == dtype)):
        raise wire.ProtocolError(f"{what}: expected a {dtype or 'floating'} tensor of shape {list(shape)}, got the "
                                 f"header {str(header)[:120]}")
    dtype = header[0]
    nbytes = math.prod(shape) * torch.empty((), dtype=_DTYPES[dtype]).element_size()
    _wait(conn, timeout, what)
    try:
        data = conn.recv_bytes(max(nbytes, 1) + 1)
    except OSError as exc:
        raise wire.ProtocolError(f"{what}: more than the {nbytes} bytes of its header") from exc
    if len(data) != nbytes:
        raise wire.ProtocolError(f"{what}: {len(data)} bytes for a {dtype} tensor of shape {list(shape)} "
                                 f"({nbytes} expected)")
    return torch.frombuffer(bytearray(data), dtype=_DTYPES[dtype]).reshape(shape).clone()


def _wait(conn: Any, timeout: float | None, what: str) -> None:
    """A sender that stops halfway (a header and no bytes) must not block the trusted process forever."""
    if timeout is not None and not conn.poll(timeout):
        raise TimeoutError(f"{what}: nothing arrived within {timeout:g} s")


def _permutation(seed: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


# -- the child side ---------------------------------------------------------------------------------------------

class _ChildState:
    def __init__(self, impl: Implementation, specs: Mapping[str, Any]) -> None:
        self.impl, self.specs = impl, specs
        self.prepared: Any = None
        self.case: BenchCase | None = None
        self.schedule: Schedule | None = None
        self.base: torch.Tensor | None = None
        self.base_dy: torch.Tensor | None = None
        self.staged: list[dict[str, Any]] = []
        self.kept: list[torch.Tensor] = []
        self.interleaver: Any = None
        self.flush: Any = None

    def prepare(self, fields: dict[str, Any], threads: int, budget: float, schedule: dict[str, Any] | None,
                crosscheck: bool, steady_malloc: bool = True) -> dict[str, Any]:
        from normbench.bench.allocator import pin_malloc
        from normbench.bench.crosscheck import Interleaver
        from normbench.bench.harness import prepare
        from normbench.bench.timer import GpuRoundSetup, calibrate

        if steady_malloc:
            pin_malloc()  # as the benchmark process pins its own (--bench-malloc): mallopt is per process
        torch.set_num_threads(threads)
        case = BenchCase(**{**fields, "shape": tuple(fields["shape"])})
        spec = self.specs[case.family]
        self.prepared = prepared = prepare(case, self.impl, spec)
        self.case = case
        self.schedule = Schedule(**schedule) if schedule else calibrate(prepared.fn, case.device, budget_s=budget)
        self.interleaver = None
        if crosscheck and torch.device(case.device).type == "cpu":
            self.interleaver = Interleaver(prepared.fn, self.schedule.iterations, 1)
        self.flush = GpuRoundSetup(case.device, self.schedule.hold_s) if self.schedule.flush_l2 else None
        module = prepared.module
        params = [p for p in module.parameters()] if module is not None else []
        buffers = [b for b in module.buffers() if b.is_floating_point()] if module is not None else []
        return {"schedule": self.schedule.as_dict(), "build_s": prepared.build_s,
                "variant_info": prepared.variant_info, "param_bytes": sum(p.numel() * p.element_size() for p in params),
                "state_bytes": sum(b.numel() * b.element_size() for b in buffers)}

    def reference_state(self, conn: Any) -> None:
        """The float64 parameters and state of the family's reference built like this module (reference_like)."""
        from normbench.checks.base import reference_like

        assert self.case is not None
        spec = self.specs[self.case.family]
        ref = reference_like(self.impl, spec, self.prepared.module, self.prepared.features, spec.default_params())
        tensors = {k: v for k, v in ref.state_dict().items() if v.is_floating_point()}
        wire.send(conn, ["ok", [[k, list(v.shape)] for k, v in tensors.items()]])
        for value in tensors.values():
            send_tensor(conn, value.to(torch.float64))

    def stage(self, seeds: list[int]) -> None:
        assert self.base is not None and self.prepared is not None
        self.staged, self.kept = [], []
        n = self.base.shape[0]
        for seed in seeds:
            order = _permutation(seed, n).to(self.base.device)
            x = self.base.index_select(0, order)
            dy = self.base_dy.index_select(0, order) if self.base_dy is not None else None
            self.staged.append(self.prepared.stage(x, dy))
        # Each round's first output is kept until the parent has read its rows, so every round allocates a new one;
        # memory for them is faulted in here, untimed (freed, it stays in the heap with malloc pinned): otherwise
        # every round's first call would pay the page faults of a fresh output that an in-process loop never pays.
        touched = [torch.empty_like(self.base).fill_(0) for _ in seeds]
        del touched

    def warm_up(self) -> None:
        assert self.schedule is not None
        for _ in range(self.schedule.warmup_rounds):
            for _ in range(self.schedule.iterations):
                self.prepared.fn()
        if self.interleaver is not None:
            self.interleaver.round()  # its first round pays its one-time costs, as the table's warm-up does

    def run(self) -> dict[str, Any]:
        """The staged rounds: each on its own input; the first call's first tensor of each round is kept."""
        from normbench.bench.timer import clock_for, cuda_event_clock, synchronize

        assert self.schedule is not None and self.case is not None
        device, schedule, fn, flush = self.case.device, self.schedule, self.prepared.fn, self.flush
        clock = clock_for(device)
        cuda = torch.device(device).type == "cuda"
        cuda_event_clock.reset()
        interleaver = self.interleaver
        times: list[float] = []
        accounted = 0.0
        # no collection between rounds: its pause would be on the parent's clock and on none of the child's rounds
        collecting = gc.isenabled()
        gc.disable()
        walls = time.perf_counter()
        for staged in self.staged:
            self.prepared.use(staged)
            if interleaver is not None:
                before = len(interleaver.ours)
                interleaver.round()
                accounted += (sum(interleaver.ours[before:]) + sum(interleaver.theirs[before:])) * schedule.iterations
            if flush is not None:
                flush()
            t0 = clock()
            out = fn()
            for _ in range(schedule.iterations - 1):
                fn()
            t1 = clock()
            self.kept.append(out)  # read (and converted, for ONNX Runtime's arrays) after the block
            times.append((t1 - t0) / schedule.iterations)
            accounted += t1 - t0
        synchronize(device)
        self.kept = [_first_tensor(out) for out in self.kept]
        if collecting:
            gc.enable()
        if cuda:
            # events time the GPU's work only; the block's flushes and holds are on the child's wall clock
            accounted = time.perf_counter() - walls
        self.staged = []
        return {"times": times, "accounted_s": accounted}

    def rows(self, conn: Any, picks: list[list[Any]]) -> None:
        tensors = []
        for index, rows in picks:
            kept = self.kept[index]
            if kept.dim() == 0 or kept.shape[0] == 0:
                tensors.append(kept)
                continue
            tensors.append(kept.index_select(0, torch.tensor(rows, device=kept.device)))
        wire.send(conn, ["ok", len(tensors)])
        for t in tensors:
            send_tensor(conn, t)


def _enter_and_load(source: tuple[str, ...], limits: Limits, output: str) -> list[Any]:
    """The judging child's set-up (normbench.sandbox: own session, captured output, resource limits, and where the
    sandbox has them its own working folder and interpreter environment), then the plugin's import."""
    import inspect

    from normbench import sandbox

    sandbox._own_process_group()
    sandbox._redirect_output(output)
    enter = getattr(sandbox, "_enter_workdir", None)
    origin = enter(output) if enter is not None else os.getcwd()
    sandbox._limit_resources(limits)
    environment = getattr(sandbox, "_interpreter_environment", None)
    if environment is not None:
        environment(limits)
    if len(inspect.signature(sandbox._load_source).parameters) > 1:
        return sandbox._load_source(source, origin)  # type: ignore[call-arg]
    return sandbox._load_source(source)


def _first_tensor(out: Any) -> torch.Tensor:
    """The tensor a timed call's output is checked by: its first element (dx of the gradients, a fused norm's normed
    output), as a tensor (ONNX Runtime returns an array); an empty tensor when there is none (the check then fails)."""
    first = out[0] if isinstance(out, tuple | list) else out
    if isinstance(first, torch.Tensor):
        return first.detach()
    try:
        return torch.as_tensor(first)
    except (TypeError, ValueError, RuntimeError):
        return torch.empty(0)


def _bench_child(conn: Any, source: tuple[str, ...], name: str, specs: Mapping[str, Any], limits: Limits,
                 output: str) -> None:
    try:
        found = [i for i in _enter_and_load(source, limits, output) if isinstance(i, Implementation)
                 and i.name == name]
        if not found:
            raise LookupError(f"{source_label(source)} no longer provides an implementation named {name!r}")
        state: _ChildState | None = _ChildState(found[0], specs)
        load_error = None
    except BaseException as exc:  # noqa: BLE001 - plugin code
        state, load_error = None, f"loading {source_label(source)} raised {type(exc).__name__}: {exc}"
    while True:
        try:
            request = wire.receive(conn)
        except (EOFError, OSError, wire.ProtocolError):
            return
        if request is None:
            return
        if state is None:
            wire.send(conn, ["error", load_error])
            continue
        verb, *args = request
        try:
            if verb == "prepare":
                wire.send(conn, ["ok", state.prepare(*args)])
            elif verb == "inputs":
                assert state.case is not None
                shape, dtype = tuple(args[0]), state.case.dtype
                base = receive_tensor(conn, dtype, shape, "the base input")
                dy = receive_tensor(conn, dtype, shape, "the base gradient") if args[1] else None
                state.base = base.to(state.case.device)
                state.base_dy = dy.to(state.case.device) if dy is not None else None
                wire.send(conn, ["ok", None])
            elif verb == "reference":
                state.reference_state(conn)
            elif verb == "warmup":
                state.warm_up()
                wire.send(conn, ["ok", None])
            elif verb == "stage":
                state.stage(args[0])
                wire.send(conn, ["ok", None])
            elif verb == "run":
                wire.send(conn, ["ok", state.run()])
            elif verb == "rows":
                state.rows(conn, args[0])
            elif verb == "interleaved":
                il = state.interleaver
                wire.send(conn, ["ok", {"ours": il.ours if il else [], "theirs": il.theirs if il else []}])
            elif verb == "peak":
                from normbench.bench.harness import peak_memory_bytes

                wire.send(conn, ["ok", peak_memory_bytes(state.prepared.fn, state.case.device)])
            elif verb == "crosscheck":
                from normbench.bench.crosscheck import crosscheck

                wire.send(conn, ["ok", crosscheck(state.prepared.fn, state.case.device, state.schedule, args[0])])
            else:
                wire.send(conn, ["error", f"unknown request {verb!r}"])
        except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit and KeyboardInterrupt included
            from normbench.deploy import DeploymentUnavailable

            kind = "unavailable" if isinstance(exc, DeploymentUnavailable) else "error"
            wire.send(conn, [kind, f"{type(exc).__name__}: {exc}", traceback.format_exc()[-2000:]])


# -- the parent side --------------------------------------------------------------------------------------------

class CaseUnavailable(BenchChildError):
    """The case's deployment cannot be built (normbench.deploy.DeploymentUnavailable in the child)."""


@dataclass
class TimedCase:
    """What the parent knows of one pass of a case timed in the implementation's process."""

    case: BenchCase
    traffic: Traffic
    features: int
    reduce: str
    numel: int
    build_s: float
    variant_info: dict[str, Any]
    schedule: Schedule
    #: seconds per call, one per round, as the child reported them
    samples: list[float]
    clock_check: dict[str, Any]
    output_check: dict[str, Any]
    interleaved: dict[str, list[float]] = field(default_factory=dict)


def _number(value: Any, what: str, low: float = 0.0) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < low:
        raise wire.ProtocolError(f"{what} is not a finite number >= {low:g}")
    return float(value)


def _schedule(value: Any) -> Schedule:
    fields = wire.plain_mapping(value, "the schedule")
    try:
        schedule = Schedule(**fields)
    except TypeError as exc:
        raise wire.ProtocolError(f"a malformed schedule: {exc}") from exc
    for name in ("warmup_rounds", "rounds", "iterations"):
        got = getattr(schedule, name)
        if not isinstance(got, int) or isinstance(got, bool) or not 0 <= got <= MAX_SCHEDULE[name]:
            raise wire.ProtocolError(f"the schedule's {name} is not an integer in [0, {MAX_SCHEDULE[name]}]")
    if schedule.rounds < 1 or schedule.iterations < 1:
        raise wire.ProtocolError("a schedule of no rounds or no iterations")
    _number(schedule.per_call_estimate_s, "the schedule's per-call estimate")
    _number(schedule.hold_s, "the schedule's hold")
    return schedule


def _reference_truth(ref: Any, pass_name: str, x: torch.Tensor, dy: torch.Tensor | None) -> torch.Tensor:
    """The reference's output on `x` (in float64; eval mode for inference), or dx under the upstream gradient `dy`."""
    ref.train(pass_name != "inference")
    x64 = x.to(torch.float64)
    if dy is None:
        with torch.no_grad():
            out = ref(x64)
        return (out[0] if isinstance(out, tuple | list) else out).detach()
    x64.requires_grad_(True)
    out = ref(x64)
    out = out[0] if isinstance(out, tuple | list) else out
    (dx,) = torch.autograd.grad(out, [x64], dy.to(torch.float64))
    return dx.detach()


def state_free_truth(ref: Any, state: dict[str, torch.Tensor], state_names: Any, pass_name: str, x: torch.Tensor,
                     dy: torch.Tensor | None) -> torch.Tensor | None:
    """The reference's truth on `x` with `state` loaded, or None when a train-mode pass's truth depends on the
    running state: computed again with every state entry moved (counters too: PowerNorm switches to its running
    statistics after a warm-up count of calls, which the timed calls pass), it differs."""
    ref.load_state_dict(state)
    truth = _reference_truth(ref, pass_name, x, dy)
    if state_names and pass_name != "inference":
        moved = {k: (v + 0.5 if v.is_floating_point() else v + 1000) if k.split(".")[-1] in state_names else v
                 for k, v in state.items()}
        ref.load_state_dict(moved)
        if not torch.equal(_reference_truth(ref, pass_name, x, dy), truth):
            return None
    return truth


def output_checkable(impl: Implementation, spec: Any, pass_name: str) -> str | None:
    """Why a case's output cannot be checked against the reordered base's truth, or None."""
    if impl.layout != "spec" or impl.token_layout == "TBC":
        return f"the module's layout ({impl.layout}, {impl.token_layout}) is not its family's"
    return None


#: why a train-mode case of a family with running state is not checked, when its truth depends on that state
STATE_DEPENDENT = ("a train-mode pass whose float64 truth depends on the running state, which every timed call "
                   "moves (PowerNorm's, MABN's statistics)")


class BenchChild:
    """One implementation's timing process; the parent side of the protocol."""

    def __init__(self, impl: Implementation, specs: Mapping[str, Any], limits: Limits, scratch: Path,
                 clock_ns: Callable[[], int] = time.perf_counter_ns) -> None:
        factory = impl.factory
        if not isinstance(factory, SandboxedFactory):
            raise TypeError(f"implementation {impl.name!r} was not discovered by discover_isolated")
        self.impl, self.specs, self.limits = impl, dict(specs), limits
        self.output = child_output(scratch, f"bench-{abs(hash(impl.name)):x}", factory.source)
        self.clock_ns = clock_ns
        self.child = _Child(_bench_child, (factory.source, impl.name, self.specs, limits), self.output)
        self.rng = random.Random()  # seeds of the parent's own choosing: OS entropy

    def close(self) -> None:
        self.child.stop()
        self.output.unlink(missing_ok=True)

    def _ask(self, message: Any, timeout: float, what: str) -> Any:
        status, reply = self.child.request(message, timeout)
        if status == "reply":
            if isinstance(reply, list) and len(reply) >= 2 and reply[0] == "ok":
                return reply[1]
            if isinstance(reply, list) and len(reply) >= 2 and reply[0] in ("error", "unavailable"):
                cls = CaseUnavailable if reply[0] == "unavailable" else BenchChildError
                raise cls(f"implementation {self.impl.name!r} ({what}): {wire.text(reply[1], 'the error', 2000)}")
            status, reply = "protocol", f"a reply that is neither ok nor error to {what}"
        printed = _excerpt(self.output, self.limits.output_excerpt).strip()
        tail = f"; it printed: {printed[-300:]}" if printed else ""
        if status == "timeout":
            raise BenchChildError(f"implementation {self.impl.name!r}: {what} did not finish within {timeout:g} s "
                                  f"(its process was killed){tail}")
        if status == "died":
            raise BenchChildError(f"implementation {self.impl.name!r}: {what} ended its process: {reply}{tail}")
        self.child.kill()
        raise BenchChildError(f"implementation {self.impl.name!r}: its process broke normbench's protocol during "
                              f"{what} ({reply}){tail}")

    def _tensor(self, dtype: str | None, shape: tuple[int, ...], what: str) -> torch.Tensor:
        try:
            return receive_tensor(self.child.conn, dtype, shape, what, self.limits.item_timeout)
        except (wire.ProtocolError, EOFError, OSError, TimeoutError) as exc:
            self.child.kill()
            raise BenchChildError(f"implementation {self.impl.name!r}: {what}: {exc}") from exc

    def time_case(self, case: BenchCase, *, threads: int, budget_s: float, schedule: Schedule | None = None,
                  crosscheck: bool = False, steady_malloc: bool = True) -> TimedCase:
        spec = self.specs[case.family]
        timeout, _ = item_time_limit(self.limits, self.impl, case.variant)
        fields = {"family": case.family, "implementation": case.implementation, "shape": list(case.shape),
                  "dtype": case.dtype, "pass_name": case.pass_name, "device": case.device,
                  "baseline": case.baseline, "variant": case.variant}
        reply = self._ask(["prepare", fields, threads, budget_s, schedule.as_dict() if schedule else None,
                           crosscheck, steady_malloc], timeout, "building and calibrating the case")
        try:
            facts = wire.plain_mapping(reply, "the prepared case")
            schedule = _schedule(facts.get("schedule"))
            param_bytes = int(_number(facts.get("param_bytes"), "param_bytes"))
            state_bytes = int(_number(facts.get("state_bytes"), "state_bytes"))
            build_s = _number(facts.get("build_s", 0.0), "build_s")
            info = wire.plain_mapping(facts.get("variant_info") or {}, "variant_info")
        except wire.ProtocolError as exc:
            self.child.kill()
            raise BenchChildError(f"implementation {self.impl.name!r}: its prepared case broke normbench's "
                                  f"protocol ({exc})") from exc
        shape = input_shape(case, self.impl)
        dtype = getattr(torch, case.dtype)
        numel = math.prod(shape)
        pass_for_bytes = "inference" if case.deployment.inference_only else case.pass_name
        # |x| from the case (the parent's); the parameters' and state's bytes as the child counts them
        x_bytes = X_TRAFFIC[pass_for_bytes] * numel * torch.empty((), dtype=dtype).element_size()
        p_bytes, s_bytes = PARAM_TRAFFIC[pass_for_bytes] * param_bytes, STATE_TRAFFIC[pass_for_bytes] * state_bytes
        traffic = Traffic(x_bytes, p_bytes, s_bytes, x_bytes + p_bytes + s_bytes)
        backward = case.pass_name in ("backward", "forward+backward")
        # The base input (and upstream gradient): drawn here, from a seed of the parent's, shipped once.
        gen = torch.Generator().manual_seed(self.rng.getrandbits(63))
        base = torch.randn(shape, generator=gen, dtype=torch.float64)
        base_dy = torch.randn(shape, generator=gen, dtype=torch.float64) if backward else None
        base_x, base_g = base.to(dtype), base_dy.to(dtype) if base_dy is not None else None
        self._send_inputs(base_x, base_g, timeout)
        why_not = output_checkable(self.impl, spec, case.pass_name)
        truth = None
        if why_not is None:
            truth = self._truth(case, spec, base_x, base_g, timeout)
            if truth is None:
                why_not = STATE_DEPENDENT
        self._ask(["warmup"], timeout, "warming up")
        overhead_s = self._empty_block_overhead(timeout)
        samples: list[float] = []
        blocks: list[Block] = []
        failures: list[str] = []
        checked = 0
        per_round = max(schedule.per_call_estimate_s * schedule.iterations, 1e-7)
        # a round holds its input (and upstream gradient) and its kept output
        round_bytes = (3 if backward else 2) * base_x.numel() * base_x.element_size()
        most = max(1, min(MAX_BLOCK_ROUNDS, MAX_BLOCK_BYTES // max(round_bytes, 1)))
        while len(samples) < schedule.rounds or sum(b.parent_s for b in blocks) < BLOCK_MIN_S:
            n = max(1, min(most, math.ceil(BLOCK_MIN_S / per_round)))
            seeds = [self.rng.getrandbits(63) for _ in range(n)]
            self._ask(["stage", seeds], timeout, "staging fresh inputs")
            start = self.clock_ns()
            result = self._ask(["run"], timeout, "timing a block of rounds")
            parent_s = (self.clock_ns() - start) / 1e9
            times, accounted = self._block_reply(result, n)
            blocks.append(Block(accounted, parent_s))
            samples += times
            # the next block is sized on the parent's clock, the only one the plugin cannot slow
            per_round = max((parent_s - overhead_s) / n, 1e-7)
            if truth is not None:
                checked += n
                failures += self._check_rows(case, spec, seeds, truth, timeout)
        clock_check = clock_agreement(blocks, overhead_s)
        if truth is None:
            output_check: dict[str, Any] = {"applied": False, "reason": why_not}
        else:
            output_check = {"applied": True, "rounds": checked, "rows_per_round": CHECK_ROWS,
                            "failed": len(failures), "worst": failures[0] if failures else "",
                            "checked": "dx" if case.pass_name == "backward" or case.pass_name == "forward+backward"
                            else "output"}
        interleaved: dict[str, list[float]] = {}
        if crosscheck and torch.device(case.device).type == "cpu":
            got = self._ask(["interleaved"], timeout, "reading the cross-check's rounds")
            interleaved = {k: [_number(v, f"a {k} round") for v in (got or {}).get(k, [])] for k in ("ours", "theirs")}
        return TimedCase(case, traffic, shape[spec.layout.features_axis], spec.layout.reduce, numel, build_s, info,
                         schedule, samples, clock_check, output_check, interleaved)

    def _send_inputs(self, x: torch.Tensor, dy: torch.Tensor | None, timeout: float) -> None:
        conn = self.child.conn
        try:
            wire.send(conn, ["inputs", list(x.shape), dy is not None])
            send_tensor(conn, x)
            if dy is not None:
                send_tensor(conn, dy)
        except OSError as exc:
            raise BenchChildError(f"implementation {self.impl.name!r}: its process stopped reading ({exc})") from exc
        self._ask(..., timeout, "receiving the inputs")

    def _truth(self, case: BenchCase, spec: Any, x: torch.Tensor, dy: torch.Tensor | None,
               timeout: float) -> torch.Tensor | None:
        """The float64 truth on the base input, from the parent's own reference loaded with the module's values;
        None for a train-mode pass whose truth depends on the running state (each timed call moves the module's, so
        no one truth holds for every round). BatchNorm's train-mode output uses the batch's statistics only: the
        truth computed again with the state shifted is the same, and the check applies."""
        from normbench.checks.toolkit.reference import load_reference

        features = x.shape[spec.layout.features_axis]
        ref = load_reference(spec)(features, **spec.default_params())
        expected = {k: v for k, v in ref.state_dict().items() if v.is_floating_point()}
        names = self._ask(["reference"], timeout, "reading the module's parameters")
        if not isinstance(names, list) or sorted(str(n[0]) for n in names if isinstance(n, list)) != sorted(expected):
            self.child.kill()
            raise BenchChildError(f"implementation {self.impl.name!r}: its reference parameters {str(names)[:200]} "
                                  f"are not the reference's {sorted(expected)}")
        values = {}
        for name, _ in names:
            values[name] = self._tensor("float64", tuple(expected[name].shape), f"reference tensor {name!r}")
        return state_free_truth(ref, {**ref.state_dict(), **values}, spec.state, case.pass_name, x, dy)

    def _empty_block_overhead(self, timeout: float) -> float:
        """The parent's cost of a block that runs nothing: the median of a few round trips."""
        self._ask(["stage", []], timeout, "staging an empty block")
        costs = []
        for _ in range(OVERHEAD_SAMPLES):
            start = self.clock_ns()
            self._ask(["run"], timeout, "timing an empty block")
            costs.append((self.clock_ns() - start) / 1e9)
        return statistics.median(costs)

    def _block_reply(self, result: Any, n: int) -> tuple[list[float], float]:
        try:
            fields = wire.plain_mapping(result, "a block's reply")
            times = fields.get("times")
            if not isinstance(times, list) or len(times) != n:
                raise wire.ProtocolError(f"a block of {n} rounds replied {str(times)[:60]} as its times")
            return [_number(t, "a round's time") for t in times], _number(fields.get("accounted_s"), "accounted_s")
        except wire.ProtocolError as exc:
            self.child.kill()
            raise BenchChildError(f"implementation {self.impl.name!r}: its block reply broke normbench's protocol "
                                  f"({exc})") from exc

    def _check_rows(self, case: BenchCase, spec: Any, seeds: list[int], truth: torch.Tensor,
                    timeout: float) -> list[str]:
        """Ask for CHECK_ROWS rows (chosen now, after the block) of every round's kept output; compare each with the
        truth in that round's order. Returns a description of every round that fails."""
        from normbench.checks.toolkit.reductions import reduction_length
        from normbench.compare import compare

        n = truth.shape[0]
        picks = [sorted(self.rng.sample(range(n), min(CHECK_ROWS, n))) for _ in seeds]
        count = self._ask(["rows", [[i, rows] for i, rows in enumerate(picks)]], timeout, "reading outputs")
        if count != len(seeds):
            self.child.kill()
            raise BenchChildError(f"implementation {self.impl.name!r}: asked for {len(seeds)} outputs, it offered "
                                  f"{str(count)[:40]}")
        kind = "backward" if case.pass_name in ("backward", "forward+backward") else "forward"
        tol = spec.tolerance(case.dtype, kind)
        length = reduction_length(spec, tuple(truth.shape), spec.default_params().get("num_groups"))
        failures = []
        for index, (seed, rows) in enumerate(zip(seeds, picks, strict=True)):
            expected = truth.index_select(0, _permutation(seed, n).index_select(0, torch.tensor(rows)))
            actual = self._tensor(None, tuple(expected.shape), f"round {index}'s output rows")
            result = compare(actual, expected, getattr(torch, case.dtype), tol, length)
            if not result.ok:
                failures.append(f"round {index}: " + result.describe("rows " + ",".join(map(str, rows))))
        return failures

    def peak_memory(self, timeout: float) -> int | None:
        got = self._ask(["peak"], timeout, "measuring the peak memory")
        return None if got is None else int(_number(got, "the peak memory"))

    def crosscheck(self, table_median_s: float, timeout: float) -> dict[str, Any]:
        got = self._ask(["crosscheck", table_median_s], timeout, "cross-checking the timers")
        return wire.plain_mapping(got, "the cross-check")
