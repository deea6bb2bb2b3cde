"""Plugins that go for the run itself rather than their own verdict: stop
or kill the forkserver their judging process was forked from, kill the xdist worker that judges them, leave a
detached process behind to rewrite the records after the run, write into the folder the run started from. Each is
a correct LayerNorm otherwise; `run_enders.control` is judged beside them.

A judging process's parent is normbench's forkserver (multiprocessing's, started by the pytest process or xdist
worker), whose parent is that pytest process.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

from normbench import Implementation
from plugins.hostile import _LayerNorm


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


class _StopsForkserver(_LayerNorm):
    def misbehave(self, x):  # noqa: ANN001, ANN201
        os.kill(os.getppid(), signal.SIGSTOP)


class _KillsForkserver(_LayerNorm):
    def misbehave(self, x):  # noqa: ANN001, ANN201
        os.kill(os.getppid(), signal.SIGKILL)


class _KillsWorker(_LayerNorm):
    def misbehave(self, x):  # noqa: ANN001, ANN201
        # Only an xdist worker: killed serially, the pytest process is the whole run (README says what remains).
        if os.environ.get("PYTEST_XDIST_WORKER"):
            os.kill(_parent_of(os.getppid()), signal.SIGKILL)


class _LeavesAWriter(_LayerNorm):
    """Starts a detached process (double fork, a session of its own: out of the judging process's group) that
    writes its pid to NORMBENCH_TEST_SURVIVOR and then waits, to rewrite the record whenever it is woken."""

    def misbehave(self, x):  # noqa: ANN001, ANN201
        pidfile = os.environ.get("NORMBENCH_TEST_SURVIVOR")
        if not pidfile or os.path.exists(pidfile):
            return
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                Path(pidfile).write_text(str(os.getpid()))
                signal.pause()  # a forger would wait here for the record to appear
            os._exit(0)
        os.wait()


class _WritesWhereItRuns(_LayerNorm):
    """Writes a file into its working folder and its temporary folder, and says where they are."""

    def misbehave(self, x):  # noqa: ANN001, ANN201
        Path("written-by-plugin.txt").write_text("relative write\n")
        fd, _ = tempfile.mkstemp(prefix="written-by-plugin-")
        os.close(fd)
        print(f"cwd={os.getcwd()} tmp={tempfile.gettempdir()}")
        sys.stdout.flush()


def _impl(name: str, factory: type) -> Implementation:
    return Implementation(name=f"run_enders.{name}", family="layernorm", factory=factory)


def control() -> Implementation:
    return _impl("control", _LayerNorm)


def stops_forkserver() -> Implementation:
    return _impl("stops_forkserver", _StopsForkserver)


def kills_forkserver() -> Implementation:
    return _impl("kills_forkserver", _KillsForkserver)


def kills_worker() -> Implementation:
    return _impl("kills_worker", _KillsWorker)


def leaves_a_writer() -> Implementation:
    return _impl("leaves_a_writer", _LeavesAWriter)


def writes_where_it_runs() -> Implementation:
    return _impl("writes_where_it_runs", _WritesWhereItRuns)


def sibling() -> Implementation:
    """A correct LayerNorm named to be judged after `kills_worker` (items are planned by name)."""
    return _impl("sibling", _LayerNorm)
