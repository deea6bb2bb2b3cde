"""Discovery of implementations: the `normbench.implementations` entry-point group and `module:attr` paths.

An entry point (or path) resolves to an Implementation, a list of them, or a zero-argument callable
returning either. A plugin that fails to import, returns the wrong thing or names an unknown family is
recorded as a `PluginError` for that plugin; every other implementation is still judged.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
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


class PluginUnavailable(Exception):  # noqa: N818 - reads as `raise PluginUnavailable(name, reason)`
    """Raised by a plugin (or put in the list it returns) for implementations whose library is missing or broken
    on this machine: one skipped item with the reason, never an error, and nothing stubbed into sys.modules."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class Registry:
    implementations: dict[str, Implementation] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)
    #: plugins (or parts of one) whose library is not available here: skipped with the reason
    unavailable: list[PluginError] = field(default_factory=list)
    #: name -> the source of every declaration of it, judged or not (a name declared twice is refused in each)
    declared: dict[str, list[str]] = field(default_factory=dict)

    def add(self, impl: Implementation, judged: bool = True) -> None:
        """Register `impl`, whose `source` the caller has set (`with_source`). A name declared more than once is
        refused in every declaration, the first included, each error naming every source: keeping the first would
        let whichever plugin sorts first pass itself off as another (results and known failures are keyed by name).
        `judged=False` only takes the name: an installed implementation not judged in this run (--no-entry-points),
        whose name an --impl-path implementation still may not reuse."""
        sources = self.declared.setdefault(impl.name, [])
        sources.append(impl.source)
        if len(sources) == 1:
            if judged:
                self.implementations[impl.name] = impl
            return
        message = (f"implementation name {impl.name!r} is declared by {_and(sources)}; names must be unique "
                   "(results and known failures are keyed by name), so no declaration of it is judged")
        first = self.implementations.pop(impl.name, None)
        refused = ([first.source] if first is not None else []) + ([impl.source] if judged else [])
        for source in dict.fromkeys(refused):
            self.errors.append(PluginError(source, message))


def _and(sources: list[str]) -> str:
    unique = list(dict.fromkeys(sources))
    if len(unique) == 1:
        return f"{unique[0]} {len(sources)} times"
    return ", ".join(unique[:-1]) + f" and {unique[-1]}"


def with_source(impl: Implementation, source: str) -> Implementation:
    """`impl` with `source` set to where it was found (an entry point, an --impl-path): the registry's to say, never
    the plugin's, or a plugin could record its results as a built-in's. Raises ImplementationError when the plugin
    set another source itself."""
    if impl.source not in ("", source):
        raise ImplementationError(f"implementation {impl.name!r} sets source={impl.source!r}; the source is set by "
                                  f"normbench to where the implementation was found ({source}), never by the plugin")
    return impl if impl.source == source else replace(impl, source=source)


def _short_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _resolve(obj: Any, source: str) -> list[Implementation | PluginUnavailable]:
    """Turn what a plugin exposes into Implementations (and PluginUnavailable notes), or raise ImplementationError
    saying why not."""
    if isinstance(obj, Implementation):
        items: Iterable[Any] = [obj]
    elif isinstance(obj, list | tuple):
        items = obj
    elif callable(obj):
        try:
            produced = obj()
        except PluginUnavailable as exc:
            return [exc]
        except Exception as exc:  # plugin code
            raise ImplementationError(f"calling it raised {_short_traceback(exc)}") from exc
        if callable(produced) and not isinstance(produced, Implementation):
            raise ImplementationError("the callable returned another callable; return an Implementation "
                                      "or a list of them")
        return _resolve(produced, source)
    else:
        raise ImplementationError(f"resolves to {type(obj).__name__}; expected a normbench.Implementation, "
                                  "a list of them, or a zero-argument callable returning either")
    result: list[Implementation | PluginUnavailable] = []
    for item in items:
        if isinstance(item, PluginUnavailable):
            result.append(item)
            continue
        if not isinstance(item, Implementation):
            raise ImplementationError(f"contains {type(item).__name__} where a normbench.Implementation "
                                      "was expected")
        result.append(item if item.source else replace(item, source=source))
    return result


def _split_path(path: str) -> tuple[str, str]:
    """`target:attr` split at the LAST colon, so a Windows drive (C:\\x\\plugin.py:attr) stays in the target."""
    target, sep, attr = path.rpartition(":")
    if not sep or not target or not attr or "/" in attr or "\\" in attr:
        raise ImplementationError(f"--impl-path {path!r}: expected the form 'module:attribute' or "
                                  "'path/to/file.py:attribute'")
    return target, attr


def _import_file(path: str, file: Path) -> ModuleType:
    """Import a plugin file under a module name of its own, so it cannot shadow or be shadowed by a package.

    The name is derived from the resolved path (``_normbench_impl_path_<stem>_<hash>``): two files both named
    plugin.py get two modules, and importing the same file twice reuses the first module.
    """
    resolved = file.resolve()
    if not resolved.is_file():
        raise ImplementationError(f"--impl-path {path!r}: no such file {str(file)!r}")
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    module_name = f"_normbench_impl_path_{stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ImplementationError(f"--impl-path {path!r}: {str(file)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec, as the import system does, so dataclasses and pickling inside the file can find it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]
        raise ImplementationError(f"--impl-path {path!r}: importing {str(file)!r} raised "
                                  f"{_short_traceback(exc)}") from exc
    return module


def load_path(path: str) -> list[Implementation]:
    """Load `module:attr` or `path/to/file.py:attr` (attr may be dotted); raises ImplementationError saying why.

    A target ending in ``.py`` (or containing a path separator) is a file, imported by location under a unique
    module name; anything else is a module name imported the normal way (it must be importable from sys.path).
    """
    target, attr = _split_path(path)
    obj: Any
    if target.endswith(".py") or "/" in target or "\\" in target:
        obj = _import_file(path, Path(target))
        where = str(target)
    else:
        try:
            obj = importlib.import_module(target)
        except Exception as exc:
            raise ImplementationError(f"--impl-path {path!r}: importing {target!r} raised "
                                      f"{_short_traceback(exc)}") from exc
        where = f"module {target!r}"
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImplementationError(f"--impl-path {path!r}: {where} has no attribute {attr!r}") from None
    try:
        return _resolve(obj, f"--impl-path {path}")
    except ImplementationError as exc:
        raise ImplementationError(f"--impl-path {path!r}: {exc}") from exc


def discover(paths: Iterable[str] = (), families: Mapping[str, Any] | None = None,
             include_entry_points: bool = True) -> Registry:
    """Every implementation from the entry-point group and from `paths`, with per-plugin errors.

    When `families` is given, an implementation whose family has no spec is reported, not judged. The source is
    where it was found (`with_source`); a name declared twice is refused in both declarations (`Registry.add`).
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
    for path in dict.fromkeys(paths):  # the same --impl-path twice is one source
        try:
            sources.append((f"--impl-path {path}", load_path(path)))
        except Exception as exc:
            registry.errors.append(PluginError(f"--impl-path {path}", _message(exc), traceback.format_exc()))
    for source, impls in sources:
        for impl in impls:
            if isinstance(impl, PluginUnavailable):
                registry.unavailable.append(PluginError(impl.name, impl.reason))
                continue
            if families is not None and impl.family not in families:
                registry.errors.append(PluginError(source, f"implementation {impl.name!r} names family "
                                                   f"{impl.family!r}, which has no spec; known families: "
                                                   f"{sorted(families)}"))
                continue
            try:
                impl = with_source(impl, source)
            except ImplementationError as exc:
                registry.errors.append(PluginError(source, str(exc)))
                continue
            registry.add(impl)
    return registry


def _message(exc: BaseException) -> str:
    if isinstance(exc, ImplementationError):
        return str(exc)
    return f"loading raised {_short_traceback(exc)}"
