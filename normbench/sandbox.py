"""Process isolation: plugin code is imported and judged in child processes, never in the run's own process.

Plugin code is untrusted (DESIGN.md, trust boundaries): it may segfault, call ``sys.exit`` or ``os._exit``,
hang in native code or in a loop that swallows every exception, allocate without end, print without end, or
change global torch state. So:

- discovery imports each plugin source (an entry point, an ``--impl-path``) in its own child process: a
  plugin whose import crashes or exits becomes that plugin's error, never the run's;
- each implementation is judged in a child process of its own, which imports only its source. A child that
  dies, or is killed by the parent on its per-item time limit (SIGKILL: native and exception-swallowing hangs
  stop too), costs that item an ``error`` outcome naming the cause; the next item gets a fresh child. After
  ``max_consecutive_timeouts`` timeouts in a row, or once the implementation's time budget is spent, its
  remaining items are errors that say they were not judged — one hanging implementation costs minutes;
- each child runs under an address-space limit (an allocation bomb is an explained error, not the machine's
  OOM killer) and a file-size limit, and writes its stdout / stderr to a file of which only a bounded excerpt
  is kept per item;
- the child fingerprints the judge just before and just after it imports the plugin: torch's global state
  (grad mode, default dtype, deterministic flags, ...) and the identity of every function of torch's functional
  API, of ``torch.Tensor`` and of normbench itself (normbench.judge_guard). What the import changed is one
  finding about the implementation, carried in every outcome's ``metrics["import_time_changes"]`` and noted on
  the first item's summary: libraries set the matmul precision, wrap ``torch.index_select`` with functools.wraps,
  or import ``torch._dynamo``, which wraps ``torch.manual_seed`` (torch's own wrapper: named, never tampering,
  at import or during a call). An import that leaves no verdict trustworthy (it changed normbench's code,
  replaced a torch function with one that does not wrap it, or left grad mode off) makes every item an error
  that says why. After every item the child checks the fingerprint taken after the import; an item whose
  implementation changed any of it is an ``error`` that names what changed, and the child is replaced. This
  catches what plugins do in the wild (monkeypatching ``F.layer_norm`` for a fused kernel, leaving grad mode
  off). It is a check in the same process, so a deliberately adversarial plugin that rewrites the fingerprint
  itself is out of its reach; process isolation still keeps it from touching any other implementation's
  verdict.

Children are forked from a ``forkserver`` that has torch and normbench imported already (a fresh process
started by exec, so no thread of pytest / xdist is inherited), which makes a child cost milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from normbench import deploy, wire
from normbench.child_outcomes import IMPORT_CHANGES, death, metrics_with_findings, tampering_summary, with_findings
from normbench.child_outcomes import listing as _listing
from normbench.compare import ULP_DEFINITION
from normbench.implementation import Implementation, ImplementationError
from normbench.item_clock import ItemClock
from normbench.judge_user import WORKDIR, assume, decide, die_with_parent, point_hypothesis_at, prepare
from normbench.outcome import ItemKey, Outcome
from normbench.registry import ENTRY_POINT_GROUP, PluginError, PluginUnavailable, Registry, with_source
from normbench.remote.judge import JUDGED_IN, TRUSTED_FALLBACK, judge_trusted, trusted
from normbench.triton_failures import import_failure_reason, set_interpreter_environment
from normbench.verdicts import Verdict
from normbench_forkserver import (
    FORKSERVER_PRELOAD,
    FROZEN_HEAP,
    discard_early,
    early_preload,
    judging_hash_seed,
)

#: a plugin source: ("entry_point", name, value) or ("path", "module:attr")
Source = tuple[str, ...]


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def default_memory_bytes() -> int:
    """A child's share of the machine: the memory divided by twice the cores (each xdist worker runs one
    child at a time), between 2 and 16 GiB. 6 GiB on a 2-core, 24 GiB machine."""
    share = _total_memory_bytes() // (2 * max(1, os.cpu_count() or 1))
    return int(min(16 << 30, max(2 << 30, share)))


@dataclass(frozen=True)
class Limits:
    """What one implementation may cost. Defaults fit a 2-core CPU machine: the slowest built-in item takes
    about 10 s there, so a 60 s limit flags only a hang, and a hanging implementation stops after two."""

    item_timeout: float = 60.0
    impl_budget: float = 900.0
    max_consecutive_timeouts: int = 2
    memory_bytes: int = field(default_factory=default_memory_bytes)
    #: the most a child may write to a file (its captured output among them)
    file_bytes: int = 256 << 20
    #: how much of an item's captured output is kept (head and tail)
    output_excerpt: int = 4096
    #: discovery: time allowed to import one plugin source
    import_timeout: float = 120.0
    #: --triton-interpret: the child sets TRITON_INTERPRET=1 before it imports the plugin (normbench.triton_interpret)
    triton_interpret: bool = False
    #: hypothesis' storage folder in the children (HYPOTHESIS_STORAGE_DIRECTORY), the one the run chose; None:
    #: whatever the forkserver inherited. Given here, not inherited, because the forkserver may have started before
    #: the run chose it (normbench_forkserver)
    hypothesis_home: str | None = None


#: a module that compiles per shape on its first call (declared compiles=True) pays its compilations inside the
#: item, as a compile deployment does (a cold Inductor compile is 20-30 s on a loaded 2-core machine): its limit is
#: the compile deployment's multiple of --check-timeout
VARIANT_TIMEOUT_FACTOR = deploy.COMPILE.timeout_factor


def item_time_limit(limits: Limits, impl: Implementation, variant: str) -> tuple[float, str]:
    """An item's time limit and, when it is raised, why: a compile or export variant, or a module that compiles
    per shape on its first call (declared compiles=True), pays its compilations inside the item."""
    factor = deploy.get(variant).timeout_factor
    if factor != 1:
        return limits.item_timeout * factor, f"the {variant} variant"
    if impl.compiles:
        return limits.item_timeout * VARIANT_TIMEOUT_FACTOR, "declared compiles=True"
    return limits.item_timeout, ""


def source_label(source: Source) -> str:
    if source[0] == "entry_point":
        return f"entry point {source[1]!r} ({source[2]})"
    return f"--impl-path {source[1]}"


# -- the child side ---------------------------------------------------------------------------------------------

def _limit_resources(limits: Limits) -> None:
    try:
        with open("/proc/self/statm") as fh:
            mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        mapped = 0
    cap = mapped + limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    # A write past the file-size limit fails with EFBIG (an exception in the plugin) instead of SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))


def _own_process_group() -> None:
    """The child leads a session (and process group) of its own, so the parent can kill it with everything it
    started (a detached ``sleep 300``, a SIGTERM-ignoring helper), and it dies with the forkserver that forked it,
    which ends with the run (Linux PR_SET_PDEATHSIG; elsewhere the process group kill alone)."""
    os.setsid()
    die_with_parent()


def _enter_workdir(output: str) -> str:
    """The child works in a scratch folder of its own (beside its output file) and its temporary files go there
    too (TMPDIR), so a plugin that writes relative paths or temporaries writes nothing into the folder the run
    was started from (its ./normbench-results among them). Returns the folder the run started in, from which a
    relative --impl-path file is still found."""
    origin = os.getcwd()
    workdir = _workdir(output)
    os.chdir(workdir)
    for name in ("TMPDIR", "TEMP", "TMP"):
        os.environ[name] = workdir
    tempfile.tempdir = None  # tempfile caches the folder it found first
    assume(workdir)  # before any plugin code: the user id the trusted process gave this folder (normbench.judge_user)
    return origin


def _workdir(output: str) -> str:
    return os.path.join(os.path.dirname(output), WORKDIR)



def _redirect_output(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _load_source(source: Source, origin: str) -> list[Implementation | PluginUnavailable]:
    from normbench.registry import _resolve, load_path

    if source[0] == "entry_point":
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == source[1]]
        if not matches:
            raise LookupError(f"entry point {source[1]!r} is no longer installed")
        return _resolve(matches[0].load(), source_label(source))
    target, sep, attr = source[1].rpartition(":")
    if sep and (target.endswith(".py") or "/" in target or "\\" in target) and not os.path.isabs(target):
        # relative to the folder the run was started from, not the child's own working folder; labelled as given,
        # since the source is the parent's label (with_source), which names the path the user wrote
        found = load_path(f"{os.path.join(origin, target)}:{attr}")
        return [dataclasses.replace(i, source=source_label(source)) if isinstance(i, Implementation) else i
                for i in found]
    return load_path(source[1])


def _interpreter_environment(limits: Limits) -> None:
    # Before the plugin's source is imported: @triton.jit reads TRITON_INTERPRET when it decorates a kernel.
    if limits.triton_interpret:
        set_interpreter_environment()


def _child_start(limits: Limits, output: str) -> str:
    """What a discovery or judging child does before any plugin code runs; returns the folder the run started in.
    The run's hypothesis folder is set before normbench.judge_user reads it (in `_enter_workdir`: a child under a
    user id of its own keeps its own), and given rather than inherited because the forkserver may have started
    before the run chose it (normbench_forkserver)."""
    _own_process_group()
    _redirect_output(output)
    if limits.hypothesis_home is not None:
        point_hypothesis_at(limits.hypothesis_home)
    origin = _enter_workdir(output)
    _limit_resources(limits)
    _interpreter_environment(limits)
    return origin


def _describe(impl: Implementation) -> dict[str, Any]:
    fields = {f.name: getattr(impl, f.name) for f in dataclasses.fields(impl) if f.name != "factory"}
    # a params= declaration is code: only its name crosses (SandboxedParams in the parent)
    fields["params"] = None if impl.params is None else str(getattr(impl.params, "__qualname__", "params"))
    return fields


def _discover_child(conn: Connection, source: Source, limits: Limits, output: str) -> None:
    origin = _child_start(limits, output)
    try:
        wire.send(conn, ("ok", [("unavailable", i.name, i.reason) if isinstance(i, PluginUnavailable)
                                else _describe(i) for i in _load_source(source, origin)]))
    except BaseException as exc:  # noqa: BLE001 - plugin code: SystemExit and KeyboardInterrupt included
        from normbench.registry import _message

        wire.send(conn, ("error", _message(exc), traceback.format_exc()[-4000:]))


def _judge_child(conn: Connection, source: Source, name: str, specs: Mapping[str, Any], profile: str,
                 limits: Limits, output: str) -> None:
    import torch

    from normbench.judge_guard import fingerprint, import_changes, shield_lazy_modules, what_changed
    from normbench.remote.server import Server
    from normbench.remote.tensors import is_envelope, spill_folder
    from normbench.runner import PlanItem, error_outcome, judge, skip_outcome

    origin = _child_start(limits, output)
    torch.set_num_threads(1)
    # What the plugin's import changes is the difference between a fingerprint taken just before it and one taken
    # just after; the latter (kept in this frame) is what each item must leave as it found it.
    before_import = fingerprint()
    try:
        found = [i for i in _load_source(source, origin) if isinstance(i, Implementation) and i.name == name]
        if not found:
            raise LookupError(f"{source_label(source)} no longer provides an implementation named {name!r}")
        impl = found[0]
        load_error = None
    except BaseException as exc:  # noqa: BLE001 - plugin code
        impl, load_error = None, f"loading {source_label(source)} raised {type(exc).__name__}: {exc}"
    # Before the fingerprint: probing a lazy module may import its target, and that import is the plugin's too.
    shielded = shield_lazy_modules()
    before = fingerprint()
    at_import = import_changes(before_import, before)
    del before_import
    findings = at_import.findings + shielded
    if load_error is None and at_import.blocking:
        load_error = (f"importing implementation {name!r} ({source_label(source)}) changed what the judge depends "
                      f"on, so none of its items can be judged: {_listing(at_import.blocking)}. "
                      + " ".join(at_import.reasons))
    prepared = {deploy.DEFAULT.name}

    def prepare_variant(variant: str) -> None:
        # Dynamo / Inductor / the ONNX exporter import and register lazily on first use, which the fingerprint
        # would read as tampering; they are loaded between items, after the last item was verified (here, or by the
        # trusted process's request before its item: normbench.remote.judge), and the fingerprint retaken.
        nonlocal before
        if variant not in prepared:
            from normbench.variants import prepare

            prepare(variant)
            prepared.add(variant)
            before = fingerprint()

    # The trusted process's requests for the items it judges itself (normbench.remote): build, set, call, grad.
    server = Server(None if load_error is not None or at_import.blocking else impl, load_error, findings,
                    spill_folder(output), verify=lambda: what_changed(before, fingerprint()), prepare=prepare_variant)
    while True:
        try:
            request = wire.receive(conn)
        except (EOFError, wire.ProtocolError):
            return
        if request is None:
            return
        if is_envelope(request):
            server.handle(conn, request)
            continue
        # a 7th field: the torch ops whose known failure this item may inherit (normbench.float64_ops); an 8th,
        # True: the trusted process judged the item and it failed, so only the float64 second judging runs here
        family, prop_name, mode, dtype, device, variant, *substitute = request
        second_judging_only = len(substitute) > 1 and substitute[1] is True
        spec = specs[family]
        prop = next(p for p in spec.properties if p.name == prop_name)
        if impl is None or at_import.blocking:
            # no implementation to name an item with: the fields the parent takes (wire.outcome), as its record
            load_failed = {"verdict": Verdict.ERROR, "summary": load_error,
                           "metrics": metrics_with_findings({}, findings)}
            wire.send(conn, ("outcome", load_failed, False))
            continue
        prepare_variant(variant)
        item = PlanItem(spec, impl, prop, mode, dtype, device, variant)
        try:
            outcome = (skip_outcome(item, "the float64 second judging only")
                       if second_judging_only else judge(item, profile))
        except BaseException as exc:  # noqa: BLE001 - SystemExit / KeyboardInterrupt raised by plugin code
            outcome = error_outcome(item, f"implementation {name!r} raised {type(exc).__name__}: {exc} "
                                          "(a BaseException: it would have ended the run)")
        if (outcome.verdict == Verdict.FAIL or second_judging_only) and substitute and substitute[0]:
            from normbench.float64_ops import judge_with_float64_ops

            outcome.metrics = {**outcome.metrics, **judge_with_float64_ops(item, substitute[0], profile)}
        changed = what_changed(before, fingerprint())
        if changed:
            outcome.verdict, outcome.observed, outcome.metrics, outcome.counterexample = Verdict.ERROR, None, {}, None
            outcome.summary = tampering_summary(name, changed)
        wire.send(conn, ("outcome", with_findings(outcome, findings).to_record(), bool(changed)))
        if changed:
            return


# -- the parent side --------------------------------------------------------------------------------------------

#: what an outcome says when its process (or one it started) stopped or killed the forkserver
FORKSERVER_HARMED = ("normbench's forkserver (the parent of the implementation's process, from which every judging "
                     "process is forked) was {what}")

_CONTEXT: multiprocessing.context.BaseContext | None = None
_WARM_VARIANTS: tuple[str, ...] = ()
#: the deployments with a forkserver warm-up (export has none: importing ONNX Runtime starts a native thread, and
#: a process with threads must not fork)
_PRELOADED_VARIANTS = tuple(d.name for d in deploy.all() if d.preload)


def warm_variants(variants: Iterable[str]) -> None:
    """Have the forkserver warm these deployment variants (normbench.preload) before it forks the first child.
    Only a process that judges should ask: the warm-up costs seconds of CPU. It applies to a forkserver not
    yet started; once started, the children still judge correctly, only without the head start."""
    global _WARM_VARIANTS
    _WARM_VARIANTS = tuple(v for v in dict.fromkeys(variants) if v in _PRELOADED_VARIANTS)


def _preload() -> list[str]:
    """What the forkserver imports once (normbench_forkserver.FORKSERVER_PRELOAD), with the warmed deployments'."""
    return [*FORKSERVER_PRELOAD, *(str(deploy.get(v).preload) for v in _WARM_VARIANTS), FROZEN_HEAP]


def _context() -> multiprocessing.context.BaseContext:
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_preload())
        _CONTEXT = ctx
    return _CONTEXT


def start_forkserver() -> None:
    """Start the forkserver now, without waiting for it: it imports what `_context` preloads while this process
    goes on, and the first child waits only for what is left of that (normbench.pytest_plugin, at configure).
    One that normbench_forkserver started before this process imported torch is kept when its preload is this run's,
    and replaced otherwise."""
    from multiprocessing import forkserver

    early = early_preload()
    if early is not None and early != _preload():
        discard_early()
    _context()
    with _forkserver_start():  # as when a child starts it (the caller's script is not run again in it)
        forkserver.ensure_running()


def forkserver_harm() -> str | None:
    """Whether the forkserver was stopped or killed (a judging child's parent is the forkserver: a plugin can
    ``os.kill(os.getppid(), SIGSTOP)``); if so, what happened to it, after ending it and clearing multiprocessing's
    record of it, so that the next child is forked from a fresh one. A stopped forkserver would otherwise hang the
    run: multiprocessing still sees it alive, connects, and waits forever for the pid of a child it never forks.
    None when it is running (or was never started)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    with server._lock:
        pid = server._forkserver_pid
        if pid is None:
            return None
        try:
            found, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            found, status = pid, 0
        if found == 0:
            return None
        if os.WIFSTOPPED(status):
            what = f"stopped by signal {_signal_name(os.WSTOPSIG(status))}"
            # SIGKILL ends a stopped process too; its children (PR_SET_PDEATHSIG) go with it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        elif os.WIFSIGNALED(status):
            what = f"killed by signal {_signal_name(os.WTERMSIG(status))}"
        else:
            what = f"ended (exit status {os.waitstatus_to_exitcode(status)})"
        # what ForkServer.ensure_running does when it finds its server dead, which it can no longer find out:
        # this process has reaped it
        os.close(server._forkserver_alive_fd)
        server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
    return what


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _excerpt(path: Path, keep: int) -> str:
    """The head and tail of what a child printed, never more than `keep` characters in memory."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            if size <= keep:
                text = fh.read().decode(errors="replace")
            else:
                head = fh.read(keep // 2).decode(errors="replace")
                fh.seek(size - keep // 2)
                tail = fh.read().decode(errors="replace")
                text = f"{head}\n[... {size - keep} bytes of output omitted ...]\n{tail}"
        os.truncate(path, 0)
    except OSError:
        return ""
    return text


@contextlib.contextmanager
def _forkserver_start() -> Iterator[None]:
    """What a forkserver inherits when it starts (in this call or in a Process.start inside it): the caller's main
    script hidden (below) and the judging hash seed in its environment."""
    with judging_hash_seed(), _main_module_hidden():
        yield


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """multiprocessing re-runs the parent's main script in a child that it finds by ``__main__.__file__``; ours
    only ever run normbench functions, and a caller's unguarded script must not run again in them."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class _Child:
    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], output: Path) -> None:
        ctx = _context()
        # stopped or killed since the last check (by a process a plugin left behind): replaced before it hangs us
        forkserver_harm()
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(child_conn, *args, str(output)), daemon=True)
        with _forkserver_start():
            self.process.start()
        child_conn.close()

    def clock(self, limit: float) -> ItemClock:
        """A clock for an item of this child's, started now: `limit` is in CPU seconds (normbench.item_clock)."""
        return ItemClock(limit, self.process.pid)

    def request(self, message: Any, limit: float | ItemClock) -> tuple[str, Any]:
        """("reply", plain data) / ("timeout", None) / ("died", why) / ("protocol", what was wrong) /
        ("forkserver", what happened to it: the child stopped or killed the forkserver, whatever it replied). A
        reply is decoded as data only (normbench.wire): nothing the child sends is unpickled here. `limit`: CPU
        seconds from now, or the clock of the item this request belongs to."""
        answer = self._request(message, limit if isinstance(limit, ItemClock) else self.clock(limit))
        harm = forkserver_harm()
        if harm is not None:
            self.kill()
            return "forkserver", harm
        return answer

    def _request(self, message: Any, clock: ItemClock) -> tuple[str, Any]:
        try:
            if message is not ...:
                wire.send(self.conn, message)
            if not clock.wait(self.conn):
                self.kill()
                return "timeout", None
            return "reply", wire.receive(self.conn)
        except wire.ProtocolError as exc:
            self.kill()
            return "protocol", str(exc)
        except (EOFError, OSError, BrokenPipeError):
            return "died", death(self.process)

    def kill(self) -> None:
        # The whole process group: what the plugin started goes too (the child leads its group, _own_process_group).
        pid = self.process.pid
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            wire.send(self.conn, None)
        except OSError:
            pass
        self.process.join(2)
        self.kill()


def _scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="normbench-sandbox-"))


def child_output(scratch: Path, name: str, source: Source) -> Path:
    """The output path of a child that imports `source`, in a folder of its own inside `scratch` (with its working
    and spill folders, under a user id of their own where the run allows it: normbench.judge_user)."""
    return prepare(scratch / name, decide(source))


def discover_isolated(paths: Iterable[str] = (), families: Mapping[str, Any] | None = None,
                      include_entry_points: bool = True, limits: Limits | None = None) -> Registry:
    """Like `normbench.registry.discover`, but every source is imported in a child process of its own.

    Installed entry points are always imported (in isolation) so that an ``--impl-path`` implementation named
    like an installed one is refused with both sources named, even with ``include_entry_points=False`` (then they
    are not judged); a name declared twice is refused in both declarations (`Registry.add`). The source is this
    process's label of where it was found, never what the child reports (`with_source`). The implementations
    returned carry a factory that refuses to run here: they are built only inside their sandbox.
    """
    limits = limits or Limits()
    scratch = _scratch_dir()
    registry = Registry()
    sources: list[Source] = [("entry_point", ep.name, ep.value)
                             for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)]
    sources += [("path", path) for path in dict.fromkeys(paths)]  # the same --impl-path twice is one source
    for number, source in enumerate(sources):
        label = source_label(source)
        output = child_output(scratch, f"discover-{number}", source)
        child = _Child(_discover_child, (source, limits), output)
        clock = child.clock(limits.import_timeout)
        status, reply = child.request(..., clock)
        child.stop()
        printed = _excerpt(output, limits.output_excerpt)
        tail = f"; it printed: {printed.strip()[-500:]}" if printed.strip() else ""
        if status == "timeout":
            registry.errors.append(PluginError(label, f"importing it did not finish within "
                                               f"{clock.describe()} (its process was killed){tail}"))
            continue
        if status == "died":
            registry.errors.append(PluginError(label, f"importing it ended the process: {reply}{tail}"))
            continue
        if status == "forkserver":
            registry.errors.append(PluginError(label, f"{FORKSERVER_HARMED.format(what=reply)} while it was "
                                               f"imported, so it is not used{tail}"))
            continue
        try:
            if status == "protocol":
                raise wire.ProtocolError(reply)
            kind, entries = wire.discovery(reply)
        except wire.ProtocolError as exc:
            registry.errors.append(PluginError(label, f"its discovery reply broke normbench's protocol: {exc}{tail}"))
            continue
        if kind == "error":
            reason = _interpreter_import_failure(entries[1], entries[0]) if limits.triton_interpret else None
            if reason is not None:  # a library Triton's interpreter cannot import: one explained skip, not an error
                registry.unavailable.append(PluginError(label, reason))
            else:
                registry.errors.append(PluginError(label, entries[0], entries[1]))
            continue
        for fields in entries:
            if isinstance(fields, tuple):
                registry.unavailable.append(PluginError(fields[1], fields[2]))
                continue
            try:
                checked = wire.implementation_fields(fields, dataclasses.fields(Implementation))
                if checked.get("params") is not None:
                    checked["params"] = SandboxedParams(str(checked.get("name")), str(checked["params"]))
                impl = Implementation(**checked, factory=SandboxedFactory(source, str(checked.get("name"))))
            except (wire.ProtocolError, ImplementationError, TypeError) as exc:
                registry.errors.append(PluginError(label, f"an implementation it declares cannot be used: {exc}"))
                continue
            if families is not None and impl.family not in families:
                registry.errors.append(PluginError(label, f"implementation {impl.name!r} names family "
                                                   f"{impl.family!r}, which has no spec; known families: "
                                                   f"{sorted(families)}"))
                continue
            try:
                impl = with_source(impl, label)
            except ImplementationError as exc:
                registry.errors.append(PluginError(label, str(exc)))
                continue
            registry.add(impl, judged=include_entry_points or source[0] != "entry_point")
    shutil.rmtree(scratch, ignore_errors=True)
    return registry


def _interpreter_import_failure(traceback_text: str, message: str) -> str | None:
    return import_failure_reason(traceback_text, message)


@dataclass(frozen=True)
class SandboxedFactory:
    """The factory of an implementation discovered in isolation: it is only ever called inside its sandbox."""

    source: Source
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"implementation {self.name!r} is built only inside its sandbox process "
                           f"(from {source_label(self.source)})")


@dataclass(frozen=True)
class SandboxedParams:
    """A params= declaration discovered in isolation: like the factory, it runs only inside the sandbox."""

    name: str
    label: str

    def __call__(self, module: Any) -> Any:
        raise RuntimeError(f"implementation {self.name!r}: its params= declaration ({self.label}) runs only inside "
                           "its sandbox process")


class Sandbox:
    """Judges one implementation's items in a child process, replaced after a crash, a timeout or tampering."""

    def __init__(self, impl: Implementation, specs: Mapping[str, Any], profile: str, limits: Limits,
                 scratch: Path) -> None:
        factory = impl.factory
        if not isinstance(factory, SandboxedFactory):
            raise TypeError(f"implementation {impl.name!r} was not discovered by discover_isolated")
        self.impl = impl
        self.source = factory.source
        self.specs = dict(specs)
        self.profile = profile
        self.limits = limits
        self.decision = decide(self.source)
        self.output = prepare(scratch / f"{abs(hash(impl.name)):x}", self.decision)
        self.child: _Child | None = None
        self.spent = 0.0
        self.timeouts_in_a_row = 0
        self.gave_up: str | None = None
        #: whether an outcome of this sandbox already says what the implementation's import changed
        self.noted_import = False
        #: whether an outcome already says that this implementation's process kept the run's user (judge_user)
        self.noted_user = False

    def judge(self, family: str, prop: str, mode: str, dtype: str, device: str,
              variant: str = deploy.DEFAULT.name, substitute_ops: tuple[str, ...] = ()) -> Outcome:
        """The item's outcome: what the child measured, or an error saying why there is no verdict. A failing item
        is judged again with `substitute_ops` in float64 (the ops whose known failure it may inherit). Its identity
        is this process's (the arguments), never the child's: a plugin cannot re-label its outcome."""
        spec_prop = next(p for p in self.specs[family].properties if p.name == prop)
        key = ItemKey(family, self.impl.name, prop, mode, dtype, device, variant)

        def unjudged(summary: str) -> Outcome:
            return Outcome(test_id=key.test_id, key=key, check=spec_prop.check, expect=spec_prop.expect[mode],
                           verdict=Verdict.ERROR, observed=None, summary=summary, ulp=ULP_DEFINITION)

        if self.gave_up:
            return unjudged(f"not judged: {self.gave_up}")
        if self.child is None:
            self.child = _Child(_judge_child, (self.source, self.impl.name, self.specs, self.profile, self.limits),
                                self.output)
        start = time.perf_counter()
        timeout, cause = item_time_limit(self.limits, self.impl, variant)
        clock = self.child.clock(timeout)
        status, reply = "fallback", None
        if trusted(spec_prop.check, variant, device):
            status, reply = judge_trusted(self, family, prop, mode, dtype, device, clock, variant)
        fallback = reply if status == "fallback" else None
        if status == "fallback":
            status, reply = self.child.request((family, prop, mode, dtype, device, variant, list(substitute_ops)),
                                               clock)
        else:
            harm = forkserver_harm()  # the trusted path talks to the child directly, not through request()
            if harm is not None:
                self.child.kill()
                status, reply = "forkserver", harm
            elif status == "outcome" and reply[0].verdict == Verdict.FAIL and substitute_ops:
                self._second_judging(reply[0], (family, prop, mode, dtype, device, variant), substitute_ops, timeout)
        elapsed = time.perf_counter() - start
        # the budget counts what the limits count: CPU seconds where they can be read (normbench.item_clock)
        self.spent += clock.used()
        printed = _excerpt(self.output, self.limits.output_excerpt)
        if status == "outcome":
            (outcome, tainted), status = reply, "judged"
        elif status == "reply":
            try:
                fields, tainted = wire.outcome(reply)
                outcome = unjudged("")
                outcome.verdict, outcome.observed, outcome.summary = (Verdict(fields["verdict"]), fields["observed"],
                                                                      fields["summary"])
                outcome.metrics, outcome.counterexample = fields["metrics"], fields["counterexample"]
                # what the plugin's process says of itself is never believed: only the trusted path sets this
                outcome.metrics[JUDGED_IN] = "plugin process"
                if fallback:
                    outcome.metrics[TRUSTED_FALLBACK] = fallback
            except wire.ProtocolError as exc:
                status, reply = "protocol", str(exc)
                self.child.kill()
        if status in ("reply", "judged"):
            self.timeouts_in_a_row = 0
            if self.decision.stays_root and not self.noted_user:
                self.noted_user = True  # said once, on the first item: a weaker sandbox than the run offers others
                outcome.summary = (f"{outcome.summary}\n  note: {self.impl.name!r} was judged as the "
                                   f"run's own user, not under a user id of its own: {self.decision.reason}")
            found = outcome.metrics.get(IMPORT_CHANGES)
            if found and not self.noted_import:
                # Said once, on the first item judged here; every outcome carries the list in its metrics.
                self.noted_import = True
                outcome.summary = (f"{outcome.summary}\n  note: importing {self.impl.name!r} changed "
                                   f"torch, and its items are judged with that in place: {_listing(found)}")
            if tainted:
                self.child.stop()
                self.child = None
        elif status == "timeout":
            self.child = None
            self.timeouts_in_a_row += 1
            why = f" ({VARIANT_TIMEOUT_FACTOR}x --check-timeout: {cause})" if cause else ""
            outcome = unjudged(f"timed out: no verdict within {clock.describe()}{why}; "
                               "the implementation's process was killed (--check-timeout)")
            if self.timeouts_in_a_row >= self.limits.max_consecutive_timeouts:
                self.gave_up = (f"implementation {self.impl.name!r} timed out on {self.timeouts_in_a_row} items in a "
                                "row, so its remaining items were not run")
        elif status == "forkserver":
            self.child = None
            self.timeouts_in_a_row = 0
            outcome = unjudged(f"{FORKSERVER_HARMED.format(what=reply)} while judging this "
                               "item, so no verdict; the next item is forked from a new one")
        elif status == "protocol":
            # Replaced, like a crashed child: what it sent is refused, and nothing it sent is believed.
            self.child = None
            self.timeouts_in_a_row = 0
            outcome = unjudged(f"the implementation's process broke normbench's protocol "
                               f"({reply}) while judging this item, so no verdict")
        else:
            self.child = None
            self.timeouts_in_a_row = 0
            outcome = unjudged(f"crashed: {reply} while judging this item")
        if printed.strip():
            outcome.extra["captured_output"] = printed
            if outcome.verdict == Verdict.ERROR:
                outcome.summary += f"\n  last output: {printed.strip()[-300:]}"
        if any(s in outcome.summary for s in ("can't allocate memory", "not enough memory", "MemoryError")):
            outcome.summary += (f" (normbench caps each implementation's process at "
                                f"{self.limits.memory_bytes / 2**30:.1f} GiB of address space: --child-memory)")
        elif "File too large" in outcome.summary:
            outcome.summary += (f" (normbench keeps at most {self.limits.file_bytes >> 20} MiB of an "
                                "implementation's output per item)")
        if self.gave_up is None and self.spent > self.limits.impl_budget:
            self.gave_up = (f"implementation {self.impl.name!r} used its time budget of {self.limits.impl_budget:g} s "
                            "(--impl-budget), so its remaining items were not run")
        outcome.duration_s = elapsed
        return outcome

    def _second_judging(self, outcome: Outcome, item: tuple[str, ...], ops: tuple[str, ...],
                        timeout: float) -> None:
        """Add to a failing trusted `outcome` what the float64 second judging measured (normbench.float64_ops).

        The verdict stays the trusted process's; whether the failure is a torch op's is measured beside the plugin,
        where a TorchDispatchMode sees the plugin's own dispatches. So a plugin can at most turn its own failure of
        an item matching a torch op's known failure into that known failure, never into a pass. A second judging
        that does not come back adds nothing: the failure stands as the implementation's."""
        assert self.child is not None
        status, reply = self.child.request((*item, list(ops), True), timeout)
        if status == "reply":
            try:
                measured, tainted = wire.outcome(reply)
            except wire.ProtocolError:
                measured, tainted = {"metrics": {}}, True
            from normbench.float64_ops import DISPATCHED, REJUDGED, REJUDGED_SUMMARY

            keep = (DISPATCHED, REJUDGED, REJUDGED_SUMMARY)
            outcome.metrics = {**outcome.metrics,
                               **{k: v for k, v in measured["metrics"].items() if k in keep and not tainted}}
            if not tainted:
                return
        self.child.kill()
        self.child = None

    def close(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


class SandboxPool:
    """One sandbox per implementation in this process (a pytest process or an xdist worker)."""

    def __init__(self, specs: Mapping[str, Any], profile: str, limits: Limits) -> None:
        self.specs = specs
        self.profile = profile
        self.limits = limits
        self.scratch = _scratch_dir()
        self.sandboxes: dict[str, Sandbox] = {}
        self.current: str | None = None

    def judge(self, impl: Implementation, family: str, prop: str, mode: str, dtype: str,
              device: str, variant: str = deploy.DEFAULT.name, substitute_ops: tuple[str, ...] = ()) -> Outcome:
        if self.current is not None and self.current != impl.name:
            # Items arrive grouped by implementation: one live child at a time keeps memory at one budget.
            self.sandboxes[self.current].close()
        self.current = impl.name
        sandbox = self.sandboxes.get(impl.name)
        if sandbox is None:
            sandbox = self.sandboxes[impl.name] = Sandbox(impl, self.specs, self.profile, self.limits, self.scratch)
        return sandbox.judge(family, prop, mode, dtype, device, variant, substitute_ops)

    def close(self) -> None:
        """Stop every child (idempotent: the run closes its pool before writing records, and again at exit)."""
        for sandbox in self.sandboxes.values():
            sandbox.close()
        # what plugins wrote into their working folder goes too
        shutil.rmtree(self.scratch, ignore_errors=True)
