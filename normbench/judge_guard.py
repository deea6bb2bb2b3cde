"""A fingerprint of the judge: torch's global state and the identity of the functions a verdict depends on.

A sandbox child (normbench.sandbox) takes it twice: just before the plugin is imported and just after. The
difference is what the plugin's *import* changed (`import_changes`): normbench reports it once, as a finding
about the implementation, and judges its items with the change in place, unless the change leaves no verdict
trustworthy (then every item is an error that says why). Items are then judged against the fingerprint taken
after the import: a plugin whose forward, backward or factory monkeypatches ``F.layer_norm`` or
``torch.Tensor.mean``, replaces normbench's compare function, or leaves grad mode off, cannot turn its own
verdict (or torch's known failures) into a pass — that item is reported as tampering instead.

normbench's functions are fingerprinted with their code objects too: a swapped ``__code__`` leaves the function
object in place.

Only names that existed in the earlier fingerprint are compared: torch and hypothesis add attributes lazily,
which changes nothing that was there. And torch replacing one of its own functions with a wrapper of it is never
a change the plugin made: importing ``torch._dynamo`` (which nearly every modern library does, often lazily)
rebinds ``torch.manual_seed`` to ``torch._disable_dynamo(torch.manual_seed)``, a ``functools.wraps`` wrapper in
torch/_compile.py that calls the original. The rule (`_wrapper_chain`): a replacement whose ``__wrapped__``
chain reaches the very object that was fingerprinted, every layer of it code from torch's own installed package
directory, is torch's own. A plugin could forge a code object's file name; like rewriting the fingerprint
itself, that is beyond what a same-process check can catch (process isolation still keeps it away from every
other implementation's verdict).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import FunctionType, ModuleType
from typing import Any

import torch

#: torch modules and classes whose functions a check or a reference calls, directly or through torch itself
_TORCH_MODULES = ("torch", "torch.nn.functional", "torch.autograd", "torch.linalg", "torch.nn.init",
                  "torch.testing", "torch.autograd.gradcheck", "torch._C._VariableFunctions")
_TORCH_CLASSES: tuple[type, ...] = (torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.nn.Parameter,
                                    torch.autograd.Function)
#: torch's installed package directory: code whose file is under it is torch's own
_TORCH_DIR = os.path.dirname(os.path.realpath(torch.__file__)) + os.sep
#: how deep a ``__wrapped__`` chain is followed
_MAX_WRAPS = 256
_STATE = "torch state: "
#: the suffix of a function's code object's fingerprint name
_CODE = ".__code__"


def global_state() -> dict[str, Any]:
    """torch's process-wide switches that change numerics or autograd."""
    denormal = torch.tensor([1e-40], dtype=torch.float32)
    return {
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "default dtype": torch.get_default_dtype(),
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "anomaly mode": torch.is_anomaly_enabled(),
        "autocast (cpu)": torch.is_autocast_enabled("cpu"),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "flush denormal": bool((denormal * 1.0).item() == 0.0),
        "default device": str(torch.get_default_device()),
    }


def _namespace(prefix: str, obj: Any) -> dict[str, Any]:
    # The objects themselves, not their id(): the fingerprint keeps the originals alive, so an id can never be
    # reused by a replacement, and a wrapper's ``__wrapped__`` can be compared with the original by identity.
    try:
        items = list(vars(obj).items())
    except TypeError:
        items = [(name, getattr(obj, name, None)) for name in dir(obj)]
    return {f"{prefix}.{name}": value for name, value in items if not name.startswith("__")}


def _class_namespace(prefix: str, cls: type) -> dict[str, Any]:
    # Every attribute as the class resolves it (its MRO), not only its own __dict__: `torch.Tensor.mean` lives in
    # torch._C.TensorBase, and `torch.Tensor.mean = f` adds a name to torch.Tensor that shadows it.
    resolved: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            resolved.update(vars(klass))
    return {f"{prefix}.{name}": value for name, value in resolved.items() if not name.startswith("__")}


def fingerprint() -> dict[str, Any]:
    """Name -> the object bound there (a function, a class attribute), and ``torch state: ...`` -> its value."""
    state: dict[str, Any] = {f"{_STATE}{k}": v for k, v in global_state().items()}
    for name in _TORCH_MODULES:
        module = sys.modules.get(name)
        if module is None and name == "torch._C._VariableFunctions":
            module = torch._C._VariableFunctions
        if module is not None:
            state.update(_namespace(name, module))
    for cls in _TORCH_CLASSES:
        state.update(_class_namespace(f"{cls.__module__}.{cls.__qualname__}", cls))
    for name, module in list(sys.modules.items()):
        if not is_judge(name) or not isinstance(module, ModuleType):
            continue
        state.update(_namespace(name, module))
        state.update(_code_objects(name, vars(module), name))
        for value in list(vars(module).values()):
            if isinstance(value, type) and getattr(value, "__module__", "") == name:
                state.update(_namespace(f"{name}.{value.__qualname__}", value))
                state.update(_code_objects(f"{name}.{value.__qualname__}", vars(value), name))
    return state


def _code_objects(prefix: str, namespace: Mapping[str, Any], module: str) -> dict[str, Any]:
    """The code object of every function defined in `module` (a method's too), by ``NAME.__code__``: a plugin that
    swaps a function's ``__code__`` leaves the function object where it was, which the names above would not see
    (the plugin's side of the trusted judge runs normbench's code: a swapped scan of what ``.to(dtype)`` left could
    report an unconverted constant away)."""
    found: dict[str, Any] = {}
    for attr, value in list(namespace.items()):
        func = value.__func__ if isinstance(value, staticmethod | classmethod) else value
        if isinstance(func, FunctionType) and func.__module__ == module:
            found[f"{prefix}.{attr}{_CODE}"] = func.__code__
    return found


def is_judge(key: str) -> bool:
    """Whether a fingerprint name belongs to normbench itself (the judge's own code)."""
    return key == "normbench" or key.startswith("normbench.")


def _same(obj: Any, original: Any) -> bool:
    if obj is original:
        return True
    # A class's staticmethod / classmethod is stored as a descriptor; `cls.name` (what a wrapper wraps) is the
    # function under it, or a bound method of it.
    func = getattr(original, "__func__", None) if isinstance(original, staticmethod | classmethod) else None
    return func is not None and (obj is func or getattr(obj, "__func__", None) is func)


def _wrapper_chain(new: Any, original: Any) -> list[Any] | None:
    """The layers of wrappers from `new` down to (not including) `original`, following ``__wrapped__`` (what
    ``functools.wraps`` sets); None when the chain never reaches `original`."""
    layers: list[Any] = []
    obj = new
    for _ in range(_MAX_WRAPS):
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        if _same(obj, original):
            return layers or None
        layers.append(obj)
        try:
            obj = obj.__wrapped__
        except Exception:  # noqa: BLE001 - no __wrapped__, or a plugin object whose __getattr__ raises
            return None
    return None


def _is_torch_code(obj: Any) -> bool:
    code = getattr(obj, "__code__", None)
    filename = getattr(code, "co_filename", None)
    return isinstance(filename, str) and os.path.realpath(filename).startswith(_TORCH_DIR)


def _where(obj: Any) -> str:
    """Where a replacement's code is: functools.wraps copies the original's name and module onto a wrapper, so
    its code object's own name and file say whose it is."""
    code = getattr(obj, "__code__", None)
    filename = getattr(code, "co_filename", None)
    if not isinstance(filename, str):
        return f"a {type(obj).__name__} object"
    path = os.path.realpath(filename)
    roots = [os.path.dirname(_TORCH_DIR.rstrip(os.sep))] + [os.path.realpath(p) for p in sys.path if p]
    for root in sorted(roots, key=len, reverse=True):
        if path.startswith(root.rstrip(os.sep) + os.sep):
            path = os.path.relpath(path, root)
            break
    name = getattr(code, "co_qualname", getattr(code, "co_name", "?"))
    return f"{name} in {path}:{code.co_firstlineno}"


@dataclass(frozen=True)
class Change:
    """One difference between two fingerprints."""

    key: str
    #: "state" (a torch switch), "deleted", "replaced" (by an object that does not wrap the original), "wrapped"
    #: (by a wrapper whose ``__wrapped__`` chain reaches the original), "torch's own" (such a wrapper, all torch code)
    kind: str
    text: str

    @property
    def judge(self) -> bool:
        return is_judge(self.key)


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Every name present before that is gone or holds another object / value now, classified."""
    found = []
    for key, value in before.items():
        if key not in after:
            found.append(Change(key, "deleted", f"{key} was deleted"))
            continue
        new = after[key]
        if key.startswith(_STATE):
            if new != value:
                found.append(Change(key, "state", f"{key} is {new!r}, was {value!r}"))
            continue
        if new is value:
            continue
        chain = _wrapper_chain(new, value)
        if chain is None and key.endswith(_CODE):
            found.append(Change(key, "replaced", f"{key.removesuffix(_CODE)} had its code swapped (its __code__ "
                                                 "was replaced)"))
        elif chain is None:
            found.append(Change(key, "replaced", f"{key} was replaced"))
        elif all(_is_torch_code(layer) for layer in chain):
            found.append(Change(key, "torch's own", f"{key} was wrapped by torch itself ({_where(chain[0])}, "
                                                   "a wrapper of the original)"))
        else:
            found.append(Change(key, "wrapped", f"{key} was replaced by a wrapper of the original (its "
                                               f"__wrapped__): {_where(chain[0])}"))
    return found


def what_changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What an item's calls (forward, backward, the factory) changed: any difference is tampering, except torch
    wrapping one of its own functions (a torch submodule imported lazily during the call, as torch.compile does)."""
    return [c.text for c in changes(before, after) if c.kind != "torch's own" or c.judge]


#: torch switches that, left so by a plugin's import, make judging impossible rather than different
_BLOCKING_STATE = {f"{_STATE}grad mode": False, f"{_STATE}inference mode": True}


@dataclass(frozen=True)
class ImportChanges:
    """What a plugin's import changed, split by what normbench does about it."""

    #: reported once on the implementation (`metrics["import_time_changes"]`); its items are judged
    findings: list[str]
    #: changes that leave no verdict trustworthy: every item of the implementation is an error naming them
    blocking: list[str]
    #: why the blocking changes block, one sentence per kind of change
    reasons: list[str]


def import_changes(before: dict[str, Any], after: dict[str, Any]) -> ImportChanges:
    """Sort what a plugin's import changed (`before`: just before it, `after`: just after) into findings and
    blocking changes.

    The items are judged in the state the import left, because that is the state the plugin's users run it in
    (a library that sets the float32 matmul precision at import sets it for them too). What that means for the
    verdict:

    - The float64 reference (normbench.families, normbench.checks.base) computes the truth by calling torch in
      this process: ``torch.mean``, ``torch.rsqrt``, ``F.layer_norm``, ``torch.Tensor`` methods, autograd. A
      replacement of one of those that does not wrap the original would have the truth computed by the plugin's
      code, so it blocks (every item is an error, as before this split). A wrapper whose ``__wrapped__`` chain
      reaches the original (functools.wraps, as torch_geometric's ``index_select`` / ``select``, lightning's
      ``torch.compile``) delegates to torch's function; it could still alter arguments or results on the way, and
      where the reference calls the wrapped function the verdict is only as good as that wrapper, which is why it
      is named in the finding rather than accepted silently. torch wrapping its own function (torch._dynamo's
      ``torch.manual_seed``) is named too, as torch's own.
    - normbench's own code computes the verdict in this process: any change to it blocks, wrapper or not
      (tampering with the judge).
    - A deleted torch or normbench name blocks: the judge or the reference may call it.
    - torch's switches are findings: the default dtype (the harness moves the module and every input to the
      dtype under test, and the reference to float64), deterministic flags, anomaly mode, the float32 matmul
      precision (float32 matmuls only; the float64 truth is unaffected), CPU autocast (it never casts float64),
      flush denormal (it touches float64 only below 2.2e-308) and the default device all change how the plugin
      runs, not how the truth is computed, and resetting them would judge a module other than the one its users
      get. Grad mode off and inference mode on are the exception and block: every check that differentiates,
      and the reference's gradients, need autograd, so judging under them would make those items errors blamed
      on the implementation (or judge half of it); resetting them instead would hide a library bug that breaks
      its users' training.
    """
    findings: list[str] = []
    blocking: list[str] = []
    reasons: dict[str, str] = {}
    for change in changes(before, after):
        if change.judge:
            blocking.append(change.text)
            reasons["judge"] = ("normbench computes the verdict in this process, so changing its code is tampering "
                                "with the judge.")
        elif change.kind == "state":
            if _BLOCKING_STATE.get(change.key, object()) == after.get(change.key):
                blocking.append(change.text)
                reasons["autograd"] = ("normbench's checks and its float64 reference differentiate with autograd, "
                                       "which needs grad mode on and inference mode off.")
            else:
                findings.append(change.text)
        elif change.kind in ("wrapped", "torch's own"):
            findings.append(change.text)
        else:
            blocking.append(change.text + (" by an object that does not wrap the original"
                                           if change.kind == "replaced" else ""))
            reasons["torch"] = ("The float64 reference calls torch in this process, so a torch function replaced "
                                "by one that does not wrap the original (or deleted) would change the truth "
                                "itself.")
    return ImportChanges(findings, blocking, list(reasons.values()))


# -- lazy modules that break sys.modules scans ------------------------------------------------------------------
#
# Libraries put lazy module objects into sys.modules (speechbrain's LazyModule, for its optional integrations)
# whose attribute lookup imports the real module and raises ImportError when that fails, for any name, dunders
# included. Python's attribute protocol says a missing attribute is an AttributeError, and scanners rely on it:
# hypothesis looks for local constants in every new module with ``getattr(module, "__file__", None)``
# (hypothesis/internal/conjecture/providers.py, `_get_local_constants`, once per generated input), and
# ``inspect.getmodule`` does ``hasattr(module, "__file__")`` over sys.modules. The ImportError escapes from
# hypothesis's data generation, so every property searched with hypothesis ends in a FlakyFailure blamed on the
# implementation, in this process and for every implementation judged after it in the same process (the module
# stays in sys.modules, and hypothesis retries it on each input). Such a module gets a subclass of its own class
# whose lookup of a *dunder* name that fails with anything other than AttributeError raises AttributeError (the
# original chained): introspection sees "no such attribute", while using the module (any other name) still
# raises the library's ImportError, so a plugin that really needs the missing module still fails as itself.

#: id -> every object of sys.modules probed so far (kept alive, so that an id is never reused by a new one)
_PROBED: dict[int, Any] = {}


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _shielded(cls: type) -> type:
    base_getattribute = cls.__getattribute__
    base_getattr = getattr(cls, "__getattr__", None)

    def convert(self: Any, name: str, exc: Exception) -> AttributeError:
        error = AttributeError(f"module {object.__getattribute__(self, '__dict__').get('__name__')!r} has no attribute "
                               f"{name!r} "
                               f"(its lazy lookup raised {type(exc).__name__}: {exc})")
        error.__cause__ = exc
        return error

    def shielded(lookup: Any) -> Any:
        """`lookup` (the class's __getattribute__ or __getattr__) with a dunder lookup's non-AttributeError turned
        into an AttributeError; every other lookup raises as the library made it."""
        def method(self: Any, name: str) -> Any:
            try:
                return lookup(self, name)
            except AttributeError:
                raise
            except Exception as exc:
                if _is_dunder(name):
                    raise convert(self, name, exc) from exc
                raise

        return method

    namespace: dict[str, Any] = {"__getattribute__": shielded(base_getattribute), "__module__": cls.__module__,
                                 "__qualname__": cls.__qualname__, "_normbench_shielded": True}
    if base_getattr is not None:
        namespace["__getattr__"] = shielded(base_getattr)
    return type(cls.__name__, (cls,), namespace)


def shield_lazy_modules() -> list[str]:
    """Shield every module in sys.modules, not probed before, whose ``__file__`` lookup raises something other
    than AttributeError (see above); returns one line per module shielded (or that could not be). A module
    probed once is not probed again: a call costs a dictionary lookup per entry of sys.modules."""
    done = []
    for name, module in list(sys.modules.items()):
        if id(module) in _PROBED:
            continue
        _PROBED[id(module)] = module
        try:
            getattr(module, "__file__", None)
            continue
        except Exception as exc:  # noqa: BLE001 - what the module raised is the point
            raised = f"{type(exc).__name__}: {str(exc)[:200]}"
        if getattr(type(module), "_normbench_shielded", False):
            continue
        try:
            module.__class__ = _shielded(type(module))
        except TypeError as exc:
            done.append(f"sys.modules[{name!r}] raises {raised} when asked for its __file__, and normbench could "
                        f"not shield it ({exc}): hypothesis's scan of sys.modules may fail")
            continue
        done.append(f"sys.modules[{name!r}] raises {raised} when asked for its __file__ (a lazy module whose "
                    "target does not import); normbench made its dunder lookups raise AttributeError, so that "
                    "hypothesis's and inspect's scans of sys.modules do not fail")
    return done
