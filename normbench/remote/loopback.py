"""The request protocol without a second process: the plugin's side served from a thread of this one.

For normbench's own tests (every check that runs in the trusted process must reach the verdict it reaches beside
the plugin, on every mutant) and for a user debugging a module under the protocol in one process. It isolates
nothing: the module runs in this process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from normbench import wire
from normbench.implementation import Implementation
from normbench.remote.proxy import Session, Speculation, judged_with, remote_implementation
from normbench.remote.server import Server
from normbench.remote.tensors import is_envelope
from normbench.spec import Spec

if TYPE_CHECKING:
    from normbench.runner import Outcome, PlanItem

#: a loopback call has no time limit worth the name: the module runs here, where a hang is the caller's
NO_DEADLINE_S = 10 * 24 * 3600


def _serve(conn: multiprocessing.connection.Connection, server: Server) -> None:
    while True:
        try:
            request = wire.receive(conn)
        except (EOFError, OSError):
            return
        if request is None or not is_envelope(request):
            return
        server.handle(conn, request)


@contextlib.contextmanager
def _served(impl: Implementation) -> Iterator[tuple[Connection, Path]]:
    """A connection to a server of `impl` running in a thread of this process, and the spill folder both use."""
    ours, theirs = multiprocessing.Pipe()
    spill = Path(tempfile.mkdtemp(prefix="normbench-loopback-"))
    thread = threading.Thread(target=_serve, args=(theirs, Server(impl, None, [], spill)), daemon=True,
                              name=f"normbench-loopback-{impl.name}")
    thread.start()
    try:
        yield ours, spill
    finally:
        wire.send(ours, None)
        thread.join(10)
        ours.close()
        theirs.close()
        shutil.rmtree(spill, ignore_errors=True)


@contextlib.contextmanager
def remote_view(impl: Implementation, spec: Spec) -> Iterator[Implementation]:
    """`impl` as the trusted judge sees it, its modules served from a thread of this process, every request waited
    for (no `Speculation`: nothing here reruns a check)."""
    with _served(impl) as (conn, spill):
        session = Session(conn, time.monotonic() + NO_DEADLINE_S, spill)
        view, _ = remote_implementation(impl, session, tuple(spec.state))
        yield dataclasses.replace(view)


def judge_remotely(item: PlanItem, profile: str = "ci", speculation: Speculation | None = None) -> Outcome:
    """`item` judged as the trusted judge judges it (normbench.remote.judge), its module served from a thread of
    this process: builds and copies that repeat are not waited for (`speculation`, a fresh one unless given: pass
    one to several items to share what they have shown, as a judging process does), a miss reruns the item."""
    from normbench.runner import judge

    speculation = Speculation() if speculation is None else speculation
    with _served(item.impl) as (conn, spill):
        outcome, _ = judged_with(lambda: Session(conn, time.monotonic() + NO_DEADLINE_S, spill, speculation),
                                 item.impl, tuple(item.spec.state),
                                 lambda view: judge(dataclasses.replace(item, impl=view), profile), {"op": "verify"})
    return outcome
