"""What the ecosystem catalogue holds: one `Entry` per third-party class, judged or not, with the reason."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from normbench.implementation import Implementation

Status = Literal["judged", "copy", "not judged", "unavailable"]


@dataclass(frozen=True)
class Entry:
    """One third-party class (or one library that could not be loaded).

    `status`: "judged" (an Implementation is built for it), "copy" (identical source to the judged class named in
    `reason`, whose verdict it shares), "not judged" (no family or declaration fits; `reason` says why), or
    "unavailable" (the library is missing or broken; `reason` is the import error).
    """

    name: str
    library: str
    status: Status
    family: str | None = None
    #: the declaration in words and values (constructor mapping, bias, affine, fixed_params, weight_offset ...)
    declaration: dict[str, Any] = field(default_factory=dict, hash=False)
    reason: str = ""
    #: the module the class lives in
    origin: str = ""
    implementation: Implementation | None = field(default=None, hash=False, compare=False)


def import_class(module: str, qualname: str) -> type[nn.Module]:
    """The class `qualname` of `module`, imported on demand (libraries are heavy: import only what is judged)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ClassFactory:
    """`factory(num_features, **spec_params)` for a third-party class, as a picklable value.

    The class is imported when the first module is built, not when the catalogue is listed. `hidden_kw` None
    passes the size positionally; `renames` maps a spec parameter to the constructor's keyword (eps ->
    variance_epsilon); `fixed_kwargs` are passed as they are (the library's own defaults made explicit).
    """

    module: str
    qualname: str
    hidden_kw: str | None = None
    takes_size: bool = True
    renames: tuple[tuple[str, str], ...] = ()
    fixed_kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, num_features: int, **params: Any) -> nn.Module:
        cls = import_class(self.module, self.qualname)
        names = dict(self.renames)
        kwargs = {names.get(k, k): v for k, v in params.items()}
        kwargs.update(self.fixed_kwargs)
        if not self.takes_size:
            return cls(**kwargs)
        if self.hidden_kw is not None:
            return cls(**{self.hidden_kw: num_features}, **kwargs)
        return cls(num_features, **kwargs)


def declaration_of(impl: Implementation, **extra: Any) -> dict[str, Any]:
    """The fields of an Implementation that say how the class was declared, for the leaderboard row."""
    decl: dict[str, Any] = {"affine": impl.affine, "bias": impl.bias}
    if impl.fixed_params:
        decl["fixed_params"] = dict(impl.fixed_params)
    if impl.weight_offset:
        decl["weight_offset"] = impl.weight_offset
    if impl.weight_attr != "weight":
        decl["weight_attr"] = impl.weight_attr
    if impl.bias and impl.bias_attr != "bias":
        decl["bias_attr"] = impl.bias_attr
    if tuple(impl.dtypes) != ("float64", "float32", "float16", "bfloat16"):
        decl["dtypes"] = list(impl.dtypes)
    if not impl.supports_gradcheck:
        decl["supports_gradcheck"] = False
    if impl.layout != "spec":
        decl["layout"] = impl.layout
    if impl.ranks is not None:
        decl["ranks"] = list(impl.ranks)
    if impl.param_dtype is not None:
        decl["param_dtype"] = impl.param_dtype
    decl.update(extra)
    return decl


def unavailable(library: str, exc: BaseException, hint: str = "") -> Entry:
    """The one entry a library that cannot be imported becomes (nothing is stubbed in its place); `hint` says how
    to install it where its own metadata cannot be installed beside the others (litgpt, torchscale, timm)."""
    reason = f"cannot import {library}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
    return Entry(name=f"{library} (library)", library=library, status="unavailable",
                 reason=reason + (f" ({hint})" if hint else ""))


def missing(exc: BaseException, *roots: str) -> bool:
    """Whether `exc` says that one of the distributions `roots` is not installed (the case an install hint fits)."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in roots


def judged(library: str, name: str, family: str, factory: Any, note: str, origin: str, **fields: Any) -> Entry:
    """The entry of a class judged under the declaration `fields` (named `<library>.<name>`)."""
    impl = Implementation(name=f"{library}.{name}", family=family, factory=factory, tags=("ecosystem", library),
                          description=f"{library} {name} ({origin}): {note}", **fields)
    return Entry(name=impl.name, library=library, status="judged", family=family,
                 declaration=declaration_of(impl, note=note), origin=origin, implementation=impl)


def not_judged(library: str, name: str, reason: str, origin: str, family: str | None = None) -> Entry:
    return Entry(name=f"{library}.{name}", library=library, status="not judged", family=family, reason=reason,
                 origin=origin)


def module_classes(module: Any) -> list[str]:
    """The names of the nn.Module classes `module` defines (not the ones it imports), sorted."""
    return sorted(name for name, obj in vars(module).items()
                  if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__)


def undeclared(library: str, module: Any, known: set[str]) -> list[Entry]:
    """A not-judged entry for every class of `module` that the adapter neither declares nor explains: a class a
    newer release adds is listed, never dropped."""
    version = getattr(importlib.import_module(library.split(".")[0]), "__version__", "?")
    return [not_judged(library, name, f"no declaration for this class yet ({library} {version}: new in this "
                                      "release?); add one to its adapter in normbench/ecosystem", module.__name__)
            for name in module_classes(module) if name not in known]
