"""How much room the fast-mode gradcheck and gradgradcheck tolerances leave the built-ins' correct float64 paths.

    python suite/benchmarks/gradcheck_margin.py [--impl NAME ...] [--impl-path normbench.ecosystem:implementations]

For every built-in implementation (or the named ones) and each of its float64 gradcheck / second_order_gradients
items, the item is judged with the check's fast-mode tolerances (normbench.checks.equivalence.FAST_GRADCHECK,
normbench.checks.second_order.FAST_GRADGRADCHECK) lowered one decade at a time, rtol staying 10x atol, and the
smallest atol at which it still passes is printed: the margin is the shipped atol over that one. An item whose
spec expects the property not to hold (a step-counter norm in train mode) is listed with its verdict at the shipped
tolerance only. Nothing is timed; docs/findings.md ("gradcheck in fast mode") quotes a run.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from normbench.checks import CHECKS
from normbench.checks.equivalence import FAST_GRADCHECK
from normbench.checks.second_order import FAST_GRADGRADCHECK
from normbench.registry import discover
from normbench.runner import PlanItem, judge
from normbench.spec import load_specs

TOLERANCES = {"gradcheck": FAST_GRADCHECK, "second_order_gradients": FAST_GRADGRADCHECK}
ATOLS = [10.0 ** -k for k in range(6, 14)]


@contextmanager
def replaced(settings: dict[str, object], values: dict[str, object]) -> Iterator[None]:
    """A check's gradcheck settings (FAST_GRADCHECK, FAST_GRADGRADCHECK) updated with `values` inside, as shipped
    after: the checks read them at each call."""
    saved = dict(settings)
    settings.update(values)
    try:
        yield
    finally:
        settings.clear()
        settings.update(saved)


def smallest_passing(item: PlanItem, settings: dict[str, object]) -> float | None:
    passed = None
    for atol in ATOLS:
        with replaced(settings, {"atol": atol, "rtol": 10 * atol}):
            if judge(item).verdict != "pass":
                break
        passed = atol
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", action="append", default=[], help="judge only these implementations")
    parser.add_argument("--impl-path", action="append", default=[], help="also these (module:attr or file.py:attr)")
    args = parser.parse_args()
    specs = load_specs(known_checks=set(CHECKS)).specs
    registry = discover(args.impl_path, families=specs)
    for error in registry.errors:
        print(f"not judged: {error.source}: {error.message}")
    print(f"{'implementation':44} {'check':24} {'mode':6} {'shipped atol':>12} {'smallest passing':>17} margin")
    for name, impl in sorted(registry.implementations.items()):
        if args.impl and name not in args.impl:
            continue
        spec = specs[impl.family]
        for prop in spec.properties:
            if prop.check not in TOLERANCES or "float64" not in impl.dtypes:
                continue
            settings = TOLERANCES[prop.check]
            shipped = float(settings["atol"])  # type: ignore[arg-type]
            for mode, expect in prop.expect.items():
                item = PlanItem(spec, impl, prop, mode, "float64")
                if expect != "holds":
                    print(f"{name:44} {prop.check:24} {mode:6} {shipped:12.0e} {'expects ' + expect:>17} "
                          f"verdict {judge(item).verdict}")
                    continue
                best = smallest_passing(item, settings)
                shown = "fails at 1e-6" if best is None else f"{best:.0e}"
                margin = "-" if best is None else f"{shipped / best:.0f}x"
                print(f"{name:44} {prop.check:24} {mode:6} {shipped:12.0e} {shown:>17} {margin}")


if __name__ == "__main__":
    main()
