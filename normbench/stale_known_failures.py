"""Which known-failure entries apply to an item's deployment variant, and which are stale after a run.

array-api-tests warns about xfails entries that no longer fail; here a stale entry is one for a judged
implementation that matches no possible item (a typo, a renamed property) or whose every item run passed. It is
decided per deployment variant: an eager known failure says nothing about a compiled module. Pure functions: the
pytest plugin prints what they return (normbench.pytest_plugin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from normbench.known_failures import KnownFailure, KnownFailures, KnownFailuresFile

#: (family, implementation, test id) of one plan item, as KnownFailures.stale takes them
PlannedItem = tuple[str, str, str]


def _names_variant(prefix: str, variant: str) -> bool:
    return prefix.endswith(f"-{variant}") or f"-{variant}]" in prefix


def known_entry_applies(prefix: str, variant: str, default_variant: str, variants: Iterable[str]) -> bool:
    """A known failure found in eager mode says nothing about a compiled or exported module (Inductor and ONNX
    Runtime run other kernels), so an entry applies to a deployment-variant item only when its id names that
    variant (`...-bfloat16-compile]`), and to `default_variant` items only when it names none of `variants`."""
    if variant == default_variant:
        return not any(_names_variant(prefix, v) for v in variants if v != default_variant)
    return _names_variant(prefix, variant)


def stale_entries(known: KnownFailures, planned: Sequence[tuple[PlannedItem, str]],
                  outcomes: Mapping[str, Mapping[str, Any]], default_variant: str, variants: Iterable[str],
                  possible: Callable[[str], list[PlannedItem]] | None = None) -> list[KnownFailure]:
    """The stale entries of `known` after a run, variant by variant in plan order.

    `planned` holds each plan item with its variant; `outcomes` the run's outcomes by test id. `possible(variant)`
    gives every item a complete plan of that variant would hold, where the run's plan is bounded (an entry for an
    item only the full plan judges was not exercised: not a typo, so not stale); None means the plan is complete.
    """
    variants = list(variants)
    found: list[KnownFailure] = []
    for variant in dict.fromkeys(v for _, v in planned):
        of_plan = [item for item, v in planned if v == variant]
        ids = {test_id for _, _, test_id in of_plan}
        of_variant = {tid: o for tid, o in outcomes.items() if tid in ids}
        complete = of_plan if possible is None or variant == default_variant else possible(variant)
        found += [e for e in known.stale(of_variant, of_plan, complete)
                  if known_entry_applies(e.prefix, variant, default_variant, variants)]
    return found


def files_for_missing_implementations(known: KnownFailures, implementations: Iterable[str],
                                      explicit_paths: Iterable[str]) -> list[KnownFailuresFile]:
    """Known-failure files under a path the user gave (--known-failures) whose implementation is not installed:
    their entries can never apply. The built-in files name plugins a user may not have, so they are not said."""
    explicit = {str(Path(p).resolve()) for p in explicit_paths}
    return [kf for kf in known.unknown_implementations(implementations)
            if any(str(Path(kf.path).resolve()).startswith(e) for e in explicit)]
