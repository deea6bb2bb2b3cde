"""The processes plugins leave behind, found and ended before a run writes anything: a leftover could otherwise forge a
record or keep the run from ending.

Every process a plugin's code runs in is outside the run's session: judging and discovery children start a
session of their own before any plugin code runs (normbench.sandbox), and no process can join an existing
session again. A plugin that double-forks and calls ``setsid`` leaves the process group the parent kills, and
PR_SET_PDEATHSIG is not inherited, so such a process would outlive the run and could rewrite its records. The pytest
process (and each xdist worker) therefore makes itself a *child subreaper* (Linux PR_SET_CHILD_SUBREAPER): an
orphan among its descendants is re-parented to it instead of to init, so it stays a descendant, and
`end_plugin_processes` kills every descendant outside the run's session before the records are written.

Elsewhere (no /proc, no subreaper) `end_plugin_processes` finds nothing: the process-group kill is all there is
(docs/isolation.md).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: prctl option: orphaned descendants are re-parented to this process (Linux 3.4+)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where the OS does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) of a process, from /proc/<pid>/stat; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces or parentheses itself: split after the last one
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1]), int(fields[3])


def plugin_processes(root: int | None = None) -> list[int]:
    """Every living descendant of `root` (this process) that is outside its session: the processes plugin code
    runs in and everything they started. Zombies are dead already and not listed."""
    root = os.getpid() if root is None else root
    own_session = os.getsid(root)
    table: dict[int, tuple[str, int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                table[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        state, _, session = table[pid]
        if session != own_session and state != "Z":
            found.append(pid)
    return sorted(found)


def _reap(pids: list[int]) -> None:
    # the ones re-parented to this process are this process's to wait for (the others' parents wait for them)
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def end_plugin_processes(deadline_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> list[int]:
    """SIGKILL every process of `plugin_processes` until none is left (a process may fork while it is being
    killed, so this repeats), and reap those that are this process's children. Returns every pid killed. Gives up
    after `deadline_s` (a process in uninterruptible sleep cannot be killed), returning what it killed."""
    killed: list[int] = []
    start = clock()
    while True:
        alive = plugin_processes()
        if not alive or clock() - start > deadline_s:
            _reap(killed)
            return killed
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            if pid not in killed:
                killed.append(pid)
        _reap(alive)
        # a SIGKILLed process dies asynchronously: yield the CPU so it can, then look again
        time.sleep(0.001)
