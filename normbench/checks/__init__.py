"""Property checks, one module per group of properties; importing this package registers them all."""

import importlib
import pkgutil

from normbench.checks.base import CHECKS, CheckContext, Observation, Skip, register_check

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CHECKS", "CheckContext", "Observation", "Skip", "register_check"]
