"""The smallest planted backward error that gradcheck and second_order_gradients flag, full mode against fast mode.

    python suite/benchmarks/gradcheck_sensitivity.py          # from the clone: it uses the self-tests' mutants

The planted LayerNorms of tests/checks/test_gradcheck_sensitivity.py (a hand-written backward with an error of
relative size δ in one element of dX, one entry of dγ, all of dX, or a sign pattern; a double backward whose
derivative through rstd is (1 + δ) too large) are judged at δ = 1e-8 ... 1e-1 under eight implementation names,
since the name seeds each item's inputs (and gradgradcheck's grad_outputs). Printed: the smallest δ flagged per name,
and the worst over the names, for the full mode's tolerances (atol 1e-5, rtol 1e-4) and the shipped fast-mode ones.
docs/findings.md ("gradcheck in fast mode") quotes a run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "checks")]

import test_gradcheck_sensitivity as planted  # noqa: E402
from gradcheck_margin import replaced  # noqa: E402  (beside this script)
from helpers import impl, run  # noqa: E402
from torch import nn  # noqa: E402

from normbench.checks.equivalence import FAST_GRADCHECK  # noqa: E402
from normbench.checks.second_order import FAST_GRADGRADCHECK  # noqa: E402

FULL = {"fast_mode": False, "atol": 1e-5, "rtol": 1e-4}
NAMES = [f"plugin{i}.norm" for i in range(8)]
DELTAS = [10.0 ** -k for k in range(8, 0, -1)]


def smallest(name: str, make: Callable[[float], type[nn.Module]], prop: str, dtype: str) -> float | None:
    for delta in DELTAS:
        if run(impl(name, "layernorm", make(delta)), prop, dtype=dtype).verdict in ("fail", "error"):
            return delta
    return None


def row(label: str, make: Callable[[float], type[nn.Module]], prop: str, dtype: str,
        settings: dict[str, object] | None = None, chosen: dict[str, object] | None = None) -> None:
    """The scan under the shipped settings, or with `settings` updated by `chosen`."""
    with replaced(settings, chosen) if settings is not None and chosen is not None else contextlib.nullcontext():
        found = [smallest(name, make, prop, dtype) for name in NAMES]
    shown = " ".join("none" if d is None else f"{d:.0e}" for d in found)
    worst = "none" if None in found else f"{max(d for d in found if d is not None):.0e}"
    print(f"{label:44} {shown}  worst {worst}")


def main() -> None:
    for fn, _ in planted.PLANTED:
        def make(delta: float, fn=fn) -> type[nn.Module]:
            return planted._layer_norm(fn, delta)
        row(f"{fn.__name__.strip('_')} float64 full", make, "gradcheck", "float64", FAST_GRADCHECK, FULL)
        row(f"{fn.__name__.strip('_')} float64 fast", make, "gradcheck", "float64")
    slip = planted._second_order_slip
    row("second_order_slip float64 full", slip, "second_order_gradients", "float64", FAST_GRADGRADCHECK, FULL)
    row("second_order_slip float64 fast", slip, "second_order_gradients", "float64")
    row("second_order_slip float32 (create_graph)", slip, "second_order_gradients", "float32")


if __name__ == "__main__":
    main()
