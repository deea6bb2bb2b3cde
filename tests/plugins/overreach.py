"""A correct LayerNorm whose import reaches for what normbench's own processes hold: it appends to a file the
run's user owns, kills a process of the run's user, writes a forged record into the results folder and reads a
file only the run's user may read. The test names each target through the environment; each attempt's result is
printed (the child's captured output). Under a user id of its own every attempt is refused and the
implementation conforms."""

from __future__ import annotations

import os
import signal

from torch import nn

from normbench import Implementation


def _attempt(what: str, action) -> None:  # noqa: ANN001
    try:
        action()
        print(f"overreach: {what}: done", flush=True)
    except OSError as exc:
        print(f"overreach: {what}: refused ({exc.strerror})", flush=True)


def _reach() -> None:
    target = os.environ.get("OVERREACH_FILE")
    if target:
        _attempt("append", lambda: open(target, "a").write("forged\n"))  # noqa: SIM115
    victim = os.environ.get("OVERREACH_PID")
    if victim:
        _attempt("kill", lambda: os.kill(int(victim), signal.SIGKILL))
    results = os.environ.get("OVERREACH_RESULTS")
    if results:
        _attempt("forge", lambda: open(os.path.join(results, "forged.json"), "w").write("{}"))  # noqa: SIM115
    secret = os.environ.get("OVERREACH_SECRET")
    if secret:
        _attempt("read", lambda: print(open(secret).read(), flush=True))  # noqa: SIM115


_reach()

def _layernorm(normalized_shape: int, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    return nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=affine)


implementations = [Implementation(name="overreach.LayerNorm", family="layernorm", factory=_layernorm)]
