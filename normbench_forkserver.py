"""A conformance run's forkserver: its preload, its hash seed, and its start before torch is imported (the pytest
entry point, normbench_entry, calls `start_early`). Outside the `normbench` package, which imports torch, and free of
side effects: normbench.sandbox imports it in every process.

pytest imports its entry-point plugins before it parses the command line, and normbench.pytest_plugin imports torch
and normbench (about 2 s). The forkserver that forks every judging process imports them again, with every check
(3.4 s here); started from pytest_configure, it began only after this process had its own, and the first plugin's
discovery waited for both in turn. normbench_entry imports neither before it calls `start_early`: when the command
line names the suite, the forkserver starts first and the two imports overlap.

The start is a guess from sys.argv, and only a head start. normbench.sandbox.start_forkserver, at configure, keeps
the forkserver when the run judges and needs exactly this preload (no deployment warm-up); otherwise it ends it and
starts the right one, and a run that judges nothing ends it. Nothing else the forkserver inherits at this point
differs from what it inherited at configure: multiprocessing gives each child the parent's sys.path and folder at
its start, and the sandbox gives it hypothesis' storage folder (normbench.sandbox.Limits), which configure chooses.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: what the forkserver imports once, so that every judging process starts with torch and every check loaded.
#: torch.fx's symbolic shapes (and sympy with them) are imported by autograd's first backward (_make_grads): 0.5 s
#: that every judging process paid again; imported once there, the forks share it. A deployment's warm-up module
#: goes before the last entry (normbench.sandbox); the heap is frozen after everything else is imported.
FORKSERVER_PRELOAD = ("normbench.sandbox", "normbench.runner", "normbench.judge_guard",
                      "torch.fx.experimental.symbolic_shapes")
FROZEN_HEAP = "normbench.preload.frozen_heap"
#: the string-hash secret of every judging process (PYTHONHASHSEED; nonzero, so randomization stays on): verdicts that
#: hang on set or dict order of strings are the same on every run. Measured: Dynamo's guard builder failed
#: ("sources must not be empty for symbol s77") on normbench.MABN's compile items under hash seeds 2 and 3 and
#: compiled them under 1 (two runs each), in the same code, so the same commit recorded them skipped on one run and
#: passing on the next. A value the user set is kept.
JUDGING_HASH_SEED = "20240229"
#: the packaged suite's module, what `pytest --pyargs normbench.suite` names
SUITE_PACKAGE = "normbench.suite"

#: set to 0, the forkserver starts at configure, as it did before this module (what
#: suite/benchmarks/one_implementation.py compares against)
EARLY_SWITCH = "NORMBENCH_EARLY_FORKSERVER"
#: the preload the forkserver was started with here, while it runs; None when this module started none
_started: list[str] | None = None


def names_the_suite(args: Sequence[str], pyargs: bool | None = None) -> bool:
    """Whether pytest arguments collect the suite: `suite` (a folder of that name), `conformance.py`, or
    `--pyargs normbench.suite` (`pyargs`: whether --pyargs is on; None: whether it is among `args`). The rule of
    both the guess from the command line and configure's decision on its parsed arguments
    (normbench.pytest_plugin). On a raw command line, options' values are not told apart from paths: a wrong guess
    costs only a forkserver that configure ends."""
    if pyargs is None:
        pyargs = "--pyargs" in args
    paths = [a.split("::")[0] for a in args if not a.startswith("-")]
    if pyargs and any(p in (SUITE_PACKAGE, f"{SUITE_PACKAGE}.conformance") for p in paths):
        return True
    return any(Path(p).resolve().name == "suite" or "conformance.py" in p for p in paths)


def guess_applies(args: Sequence[str]) -> bool:
    """Whether to start the forkserver now: the suite is named (an xdist worker's command line is execnet's, and
    names nothing), and no option on the command line changes the preload (a deployment's warm-up)."""
    return names_the_suite(args) and not any(a.startswith("--variant") for a in args)


@contextmanager
def judging_hash_seed() -> Iterator[None]:
    """The judging hash seed in this process's environment while a forkserver starts (it inherits it)."""
    pinned = "PYTHONHASHSEED" not in os.environ
    if pinned:
        os.environ["PYTHONHASHSEED"] = JUDGING_HASH_SEED
    try:
        yield
    finally:
        if pinned:
            os.environ.pop("PYTHONHASHSEED", None)


def start_early(args: Sequence[str]) -> bool:
    """Start the forkserver with the base preload, without waiting for it, when `args` guess a conformance run."""
    global _started
    if _started is not None or os.environ.get(EARLY_SWITCH) == "0" or not guess_applies(args):
        return False
    import multiprocessing
    from multiprocessing import forkserver

    preload = [*FORKSERVER_PRELOAD, FROZEN_HEAP]
    try:
        multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
        with judging_hash_seed():
            forkserver.ensure_running()
    except Exception:  # noqa: BLE001 - every pytest session of the environment loads this: never fail one here
        return False  # configure starts it, or says why it cannot
    _started = preload
    return True


def early_preload() -> list[str] | None:
    """The preload of the forkserver this module started, if it still runs as that one."""
    from multiprocessing import forkserver

    if _started is None or forkserver._forkserver._forkserver_pid is None:
        return None
    return _started


def discard_early() -> None:
    """End the forkserver this module started (configure found the guess wrong). Killed, not asked to stop: it may
    still be importing, and reads its stop request only afterwards."""
    global _started
    if early_preload() is None:
        _started = None
        return
    from multiprocessing import forkserver, util

    server = forkserver._forkserver
    with server._lock:
        pid = server._forkserver_pid
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(server._forkserver_alive_fd)
        address = server._forkserver_address
        if address and not util.is_abstract_socket_namespace(address):
            try:
                os.unlink(address)
            except FileNotFoundError:
                pass
        server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
    _started = None
