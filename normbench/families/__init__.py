"""Built-in implementations of the seed families (PowerNorm, Unified Normalization, MABN, ...).

Each module in this package exposes ``implementations() -> list[Implementation]``; the entry point
``seed-families`` collects them all.
"""

from __future__ import annotations

import importlib
import pkgutil

from normbench.implementation import Implementation


def implementations() -> list[Implementation]:
    found: list[Implementation] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(module.implementations())
    return found
