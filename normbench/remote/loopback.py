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
from collections.abc import Iterator
from pathlib import Path

from normbench import wire
from normbench.implementation import Implementation
from normbench.item_clock import ItemClock
from normbench.remote.proxy import Session, remote_implementation
from normbench.remote.server import Server
from normbench.remote.tensors import is_envelope
from normbench.spec import Spec

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
def remote_view(impl: Implementation, spec: Spec) -> Iterator[Implementation]:
    """`impl` as the trusted judge sees it, its modules served from a thread of this process."""
    ours, theirs = multiprocessing.Pipe()
    spill = Path(tempfile.mkdtemp(prefix="normbench-loopback-"))
    thread = threading.Thread(target=_serve, args=(theirs, Server(impl, None, [], spill)), daemon=True,
                              name=f"normbench-loopback-{impl.name}")
    thread.start()
    session = Session(ours, ItemClock(NO_DEADLINE_S, None), spill)
    view, _ = remote_implementation(impl, session, tuple(spec.state))
    try:
        yield dataclasses.replace(view)
    finally:
        wire.send(ours, None)
        thread.join(10)
        ours.close()
        theirs.close()
        shutil.rmtree(spill, ignore_errors=True)
