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

import operator
import os
import sys
from collections.abc import Iterator, Mapping
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


class Fingerprint(Mapping[str, Any]):
    """Name -> the object bound there (a function, a class attribute, a code object), and ``torch state: ...`` ->
    its value, as they were when it was taken.

    Taking one holds, by identity, each namespace it reads (a module's or a class's own dict) with the keys and
    values it had then, and builds the mapping of names only when it is read: formatting the 8000 names cost 20 ms an
    item on a loaded 2-core machine, a fifth of a typical item, while two fingerprints whose namespaces hold the very
    same objects (`same_as`) can differ in nothing, which `changes` sees in about a millisecond."""

    def __init__(self) -> None:
        self._state = {f"{_STATE}{k}": v for k, v in global_state().items()}
        #: (prefix, namespace's owner, its keys, its values) in the order the names are listed; a class read through its
        #: MRO is one entry per class of it (prefix shared: the later class's name wins, as attribute lookup does)
        self._spaces: list[tuple[str, Any, tuple[str, ...], tuple[Any, ...]]] = []
        #: where the names are not a dict's (an object without __dict__): its names, read now
        self._read: list[tuple[int, dict[str, Any]]] = []
        #: (where, prefix, [(name, function)], their code objects) of normbench's functions, listed after their
        #: namespace (`where`: how many namespaces come before them)
        self._codes: list[tuple[int, str, list[tuple[str, FunctionType]], tuple[Any, ...]]] = []
        #: which module each name of sys.modules read is, and each class's MRO: a rebinding there changes what is read
        self._modules: list[tuple[str, Any]] = []
        self._mros: list[tuple[type, tuple[type, ...]]] = []
        self._names: dict[str, Any] | None = None
        #: a later fingerprint found equal to this one by the full comparison (see `changes`)
        self.equivalent: Fingerprint | None = None
        for name in _TORCH_MODULES:
            module = sys.modules.get(name)
            self._modules.append((name, module))
            if module is None and name == "torch._C._VariableFunctions":
                module = torch._C._VariableFunctions
            if module is not None:
                self._space(name, module)
        for cls in _TORCH_CLASSES:
            self._mros.append((cls, cls.__mro__))
            for klass in reversed(cls.__mro__):
                if klass is not object:
                    self._space(f"{cls.__module__}.{cls.__qualname__}", klass)
        for name, module in [(n, m) for n, m in list(sys.modules.items()) if n.startswith("normbench")]:
            if not is_judge(name) or not isinstance(module, ModuleType):
                continue
            self._modules.append((name, module))
            functions, classes = _defined(module, name, *self._space(name, module))
            self._code_objects(name, functions)
            for cls in classes:
                prefix = f"{name}.{cls.__qualname__}"
                self._code_objects(prefix, _defined(cls, name, *self._space(prefix, cls))[0])

    def _space(self, prefix: str, obj: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        try:
            mapping = vars(obj)
        except TypeError:
            self._read.append((len(self._spaces), _read_names(prefix, obj)))
            self._spaces.append((prefix, None, (), ()))
            return (), ()  # no normbench function or class is read this way
        keys, values = tuple(mapping), tuple(mapping.values())
        self._spaces.append((prefix, obj, keys, values))  # the owner: a class's vars() is a new proxy each time
        return keys, values

    def _code_objects(self, prefix: str, functions: list[tuple[str, FunctionType]]) -> None:
        """The code object of every function defined in normbench (a method's too), by ``NAME.__code__``: a plugin
        that swaps a function's ``__code__`` leaves the function object where it was, which the names above would
        not see (the plugin's side of the trusted judge runs normbench's code: a swapped scan of what
        ``.to(dtype)`` left could report an unconverted constant away)."""
        if functions:
            codes = tuple(map(_CODE_OF, map(_SECOND, functions)))
            self._codes.append((len(self._spaces), prefix, functions, codes))

    def same_as(self, other: Fingerprint) -> bool:
        """Whether every namespace read holds the very objects it held in `other`, the modules and MROs are the same
        and torch's switches have the same values: then no name can map to anything else."""
        if self._state != other._state or len(self._spaces) != len(other._spaces):
            return False
        if (self._read or other._read) and not _same_reads(self._read, other._read):
            return False
        if len(self._modules) != len(other._modules) or len(self._codes) != len(other._codes):
            return False
        if not all(a[0] == b[0] and a[1] is b[1] for a, b in zip(self._modules, other._modules, strict=True)):
            return False
        if not all(a[0] is b[0] and a[1] == b[1] for a, b in zip(self._mros, other._mros, strict=True)):
            return False
        for (pa, ma, ka, va), (pb, mb, kb, vb) in zip(self._spaces, other._spaces, strict=True):
            if ma is not mb or pa != pb or ka != kb or not all(map(operator.is_, va, vb)):
                return False
        return all(a[0] == b[0] and (a[2] is b[2] or a[2] == b[2]) and all(map(operator.is_, a[3], b[3]))
                   for a, b in zip(self._codes, other._codes, strict=True))

    def _build(self) -> dict[str, Any]:
        names = dict(self._state)
        read = dict(self._read)
        codes = iter(self._codes)
        code = next(codes, None)
        for i, (prefix, _, keys, values) in enumerate(self._spaces):
            if i in read:
                names.update(read[i])
            else:
                names.update((f"{prefix}.{k}", v) for k, v in zip(keys, values, strict=True)
                             if not k.startswith("__"))
            while code is not None and code[0] == i + 1:
                names.update((f"{code[1]}.{attr}{_CODE}", c) for (attr, _), c in zip(code[2], code[3], strict=True))
                code = next(codes, None)
        return names

    @property
    def names(self) -> dict[str, Any]:
        if self._names is None:
            self._names = self._build()
        return self._names

    def __getitem__(self, key: str) -> Any:
        return self.names[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, key: object) -> bool:
        return key in self.names


_CODE_OF = operator.attrgetter("__code__")
_SECOND = operator.itemgetter(1)
#: Py_TPFLAGS_IMMUTABLETYPE: a type whose attributes cannot be set (CPython's object.h)
_IMMUTABLE_TYPE = 1 << 8
#: id(obj) -> (obj, its names) for an object without __dict__ of an immutable type: they cannot change
_READ: dict[int, tuple[Any, dict[str, Any]]] = {}


def _read_names(prefix: str, obj: Any) -> dict[str, Any]:
    """`prefix.NAME` -> value of every non-dunder name dir() lists, for an object without __dict__."""
    known = _READ.get(id(obj))
    if known is not None and known[0] is obj:
        return known[1]
    names = {f"{prefix}.{n}": getattr(obj, n, None) for n in dir(obj) if not n.startswith("__")}
    cls = type(obj)
    if cls.__flags__ & _IMMUTABLE_TYPE and not hasattr(cls, "__getattr__") \
            and cls.__getattribute__ is object.__getattribute__:
        _READ[id(obj)] = (obj, names)
    return names
#: id(owner) -> (owner, the values it held, its functions, its classes) as `_defined` last found them
_DEFINED: dict[int, tuple[Any, tuple[Any, ...], list[tuple[str, FunctionType]], list[type]]] = {}


def _defined(owner: Any, module: str, keys: tuple[str, ...], values: tuple[Any, ...]
             ) -> tuple[list[tuple[str, FunctionType]], list[type]]:
    """The functions (name, function; a static or class method's function) and the classes that `module` defines
    among a namespace's values. Kept per namespace: while it holds the very same objects, the answer is the same
    (the owner is kept alive, so its id is never another's)."""
    known = _DEFINED.get(id(owner))
    if known is not None and known[0] is owner and len(known[1]) == len(values) \
            and all(map(operator.is_, known[1], values)):
        return known[2], known[3]
    functions: list[tuple[str, FunctionType]] = []
    classes: list[type] = []
    for attr, value in zip(keys, values, strict=True):
        func = value.__func__ if isinstance(value, staticmethod | classmethod) else value
        if isinstance(func, FunctionType) and func.__module__ == module:
            functions.append((attr, func))
        elif isinstance(value, type) and getattr(value, "__module__", "") == module:
            classes.append(value)
    _DEFINED[id(owner)] = (owner, values, functions, classes)
    return functions, classes


def _same_reads(a: list[tuple[int, dict[str, Any]]], b: list[tuple[int, dict[str, Any]]]) -> bool:
    return len(a) == len(b) and all(
        ia == ib and (da is db or da.keys() == db.keys() and all(map(operator.is_, da.values(), db.values())))
        for (ia, da), (ib, db) in zip(a, b, strict=True))


def fingerprint() -> Fingerprint:
    """Name -> the object bound there (a function, a class attribute), and ``torch state: ...`` -> its value."""
    return Fingerprint()


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


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Every name present before that is gone or holds another object / value now, classified. Between two
    fingerprints whose namespaces hold the same objects (or `after` and one the full comparison already found equal
    to `before`) there is nothing to compare: the names map to the very same objects."""
    quick = isinstance(before, Fingerprint) and isinstance(after, Fingerprint)
    if quick and (before.same_as(after) or (before.equivalent is not None and before.equivalent.same_as(after))):
        return []
    found = _changes(before, after)
    if quick and not found:
        before.equivalent = after
    return found


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
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


def what_changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
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


def import_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> ImportChanges:
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
