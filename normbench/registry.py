"""Discovery of implementations: the `normbench.implementations` entry-point group and `module:attr` paths.

An entry point (or path) resolves to an Implementation, a list of them, or a zero-argument callable
returning either. A plugin that fails to import, returns the wrong thing or names an unknown family is
recorded as a `PluginError` for that plugin; every other implementation is still judged.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

from normbench.implementation import Implementation, ImplementationError

ENTRY_POINT_GROUP = "normbench.implementations"


@dataclass(frozen=True)
class PluginError:
    """A plugin that could not be loaded; `source` names the entry point or path."""

    source: str
    message: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class Registry:
    implementations: dict[str, Implementation] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)

    def add(self, impl: Implementation) -> None:
        existing = self.implementations.get(impl.name)
        if existing is not None:
            self.errors.append(PluginError(impl.source, f"implementation name {impl.name!r} is already "
                                           f"registered by {existing.source}; names must be unique"))
            return
        self.implementations[impl.name] = impl


def _short_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _resolve(obj: Any, source: str) -> list[Implementation]:
    """Turn what a plugin exposes into Implementations, or raise ImplementationError saying why not."""
    if isinstance(obj, Implementation):
        items: Iterable[Any] = [obj]
    elif isinstance(obj, list | tuple):
        items = obj
    elif callable(obj):
        try:
            produced = obj()
        except Exception as exc:  # plugin code
            raise ImplementationError(f"calling it raised {_short_traceback(exc)}") from exc
        if callable(produced) and not isinstance(produced, Implementation):
            raise ImplementationError("the callable returned another callable; return an Implementation "
                                      "or a list of them")
        return _resolve(produced, source)
    else:
        raise ImplementationError(f"resolves to {type(obj).__name__}; expected a normbench.Implementation, "
                                  "a list of them, or a zero-argument callable returning either")
    result = []
    for item in items:
        if not isinstance(item, Implementation):
            raise ImplementationError(f"contains {type(item).__name__} where a normbench.Implementation "
                                      "was expected")
        result.append(item if item.source else replace(item, source=source))
    return result


def load_path(path: str) -> list[Implementation]:
    """Load `module:attr` (attr may be dotted); raises ImplementationError with a clear message."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ImplementationError(f"--impl-path {path!r}: expected the form 'module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ImplementationError(f"--impl-path {path!r}: importing {module_name!r} raised "
                                  f"{_short_traceback(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImplementationError(f"--impl-path {path!r}: module {module_name!r} has no attribute "
                                      f"{attr!r}") from None
    try:
        return _resolve(obj, f"--impl-path {path}")
    except ImplementationError as exc:
        raise ImplementationError(f"--impl-path {path!r}: {exc}") from exc


def discover(paths: Iterable[str] = (), families: Mapping[str, Any] | None = None,
             include_entry_points: bool = True) -> Registry:
    """Every implementation from the entry-point group and from `paths`, with per-plugin errors.

    When `families` is given, an implementation whose family has no spec is reported, not judged.
    """
    registry = Registry()
    sources: list[tuple[str, Any]] = []
    if include_entry_points:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            source = f"entry point {ep.name!r} ({ep.value})"
            try:
                sources.append((source, _resolve(ep.load(), source)))
            except Exception as exc:  # import errors, bad objects: report this plugin only
                registry.errors.append(PluginError(source, _message(exc), traceback.format_exc()))
    for path in paths:
        try:
            sources.append((f"--impl-path {path}", load_path(path)))
        except Exception as exc:
            registry.errors.append(PluginError(f"--impl-path {path}", _message(exc), traceback.format_exc()))
    for source, impls in sources:
        for impl in impls:
            if families is not None and impl.family not in families:
                registry.errors.append(PluginError(source, f"implementation {impl.name!r} names family "
                                                   f"{impl.family!r}, which has no spec; known families: "
                                                   f"{sorted(families)}"))
                continue
            registry.add(impl)
    return registry


def _message(exc: BaseException) -> str:
    if isinstance(exc, ImplementationError):
        return str(exc)
    return f"loading raised {_short_traceback(exc)}"
