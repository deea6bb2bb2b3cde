"""Plugins that attack the boundary between their process and normbench's: a value whose
unpickling would run code in pytest's process, and forged or garbage messages written into the pipe."""

from __future__ import annotations

import gc
import os
from multiprocessing.connection import Connection

import torch
import torch.nn.functional as F
from torch import nn

from normbench import Implementation

#: where the unpickling payload would leave its mark (set by the test through the environment)
MARKER_ENV = "NORMBENCH_TEST_BOUNDARY_MARKER"


def _leave_mark() -> str:
    path = os.environ.get(MARKER_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(f"ran in process {os.getpid()}\n")
    return "a plain description"


class _Trojan(str):
    """A str whose unpickling calls _leave_mark: a pickle-based boundary runs it in the receiving process."""

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (_leave_mark, ())


class _LayerNorm(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def _connections() -> list[Connection]:
    found = []
    for o in gc.get_objects():
        try:  # a dead weakref.proxy (Inductor leaves some) raises on isinstance
            if isinstance(o, Connection) and not o.closed:
                found.append(o)
        except ReferenceError:
            pass
    return found


@torch.compiler.disable  # run as written under torch.compile too (Dynamo cannot trace gc.get_objects)
def _send_to_every_pipe(data: bytes) -> None:
    for conn in _connections():
        conn.send_bytes(data)


class GarbageWriterLayerNorm(_LayerNorm):
    """Writes bytes that are not a message into the pipe to the parent, then computes correctly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _send_to_every_pipe(b"\x80\x04\x95garbage that is no message")
        return super().forward(x)


class HugeWriterLayerNorm(_LayerNorm):
    """Sends one message far over the size limit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _send_to_every_pipe(b'["outcome", {"verdict": "pass", "summary": "' + b"x" * (8 << 20) + b'"}, false]')
        return super().forward(x)


class WrongVerdictLayerNorm(_LayerNorm):
    """Sends a well-formed JSON message whose verdict the protocol does not allow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _send_to_every_pipe(b'["outcome", {"verdict": "conforms", "summary": "trust me"}, false]')
        return super().forward(x)


trojan = Implementation(name="boundary.trojan", family="layernorm", factory=_LayerNorm, description=_Trojan("x"))
garbage = Implementation(name="boundary.garbage", family="layernorm", factory=GarbageWriterLayerNorm)
huge = Implementation(name="boundary.huge", family="layernorm", factory=HugeWriterLayerNorm)
wrong_verdict = Implementation(name="boundary.wrong_verdict", family="layernorm", factory=WrongVerdictLayerNorm)


class SpawnsSleeperLayerNorm(_LayerNorm):
    """Starts a `sleep 300` on every forward and writes its pid where the test looks; computes correctly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import subprocess

        proc = subprocess.Popen(["sleep", "300"])
        path = os.environ.get(MARKER_ENV)
        if path:
            with open(path, "a") as fh:
                fh.write(f"{proc.pid}\n")
        return super().forward(x)


sleeper = Implementation(name="boundary.sleeper", family="layernorm", factory=SpawnsSleeperLayerNorm)
