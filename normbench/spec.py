"""Family specs: YAML data validated against specs/schema.json, loaded into frozen dataclasses.

Specs are data: a spec names checks by registered name and never an import path. Every problem is a
`SpecError` whose message names the file and the key (tavern's lesson: show the schema error, not a
KeyError from deep inside the loader).

What every family says alike about a property (the `why` of a calling-context check, say) is written once, in
specs/defaults.yaml: each spec's property of that name gets those fields unless it gives them itself, before
the spec is validated.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeAlias

import jsonschema

from normbench import safe_yaml

Expectation = Literal["holds", "violated", "report"]
#: property name -> the fields (dtypes, options, timeout, why) its blocks get unless they give them
Defaults: TypeAlias = Mapping[str, Mapping[str, Any]]
#: the shipped defaults, next to the specs; never itself loaded as a spec
DEFAULTS_FILE = "defaults.yaml"


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and the key."""

    def __init__(self, path: str | Path, key: str, message: str) -> None:
        self.path = str(path)
        self.key = key
        super().__init__(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")


@dataclass(frozen=True)
class Tolerance:
    """Error bound per element: eps(dtype)*(rel*|t| + abs*S) + eps(acc)*red*sqrt(L)*S, S = max|t|."""

    rel: float
    abs: float
    red: float
    #: optional bound on the per-channel mean signed relative error (units of eps) over many rows
    bias: float | None = None


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: Literal["number", "integer", "boolean", "string"]
    default: Any
    nullable: bool = False
    #: the allowed values, when the parameter is one of a few (e.g. rmsnorm's eps_mode: "add" | "clamp").
    choices: tuple[Any, ...] | None = None
    #: a convention of the family's math that the reference honours (rmsnorm's eps_mode) but no factory is
    #: passed: an implementation that follows another value declares it in its fixed_params.
    convention: bool = False


@dataclass(frozen=True)
class PropertySpec:
    """One property of a family: which check tests it and what is expected, per mode."""

    name: str
    check: str
    expect: Mapping[str, Expectation]  # mode -> expectation
    dtypes: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    why: str = ""


@dataclass(frozen=True)
class Layout:
    features_axis: int
    ranks: tuple[int, ...]
    reduce: Literal["token", "channel", "group", "instance"]
    moments: Literal["centred", "second"]
    description: str = ""


@dataclass(frozen=True)
class Spec:
    family: str
    summary: str
    path: str
    reference: str
    layout: Layout
    params: Mapping[str, ParamSpec]
    tolerances: Mapping[str, Mapping[str, Tolerance]]  # dtype -> {"forward"|"backward"|"reduction": Tolerance}
    properties: tuple[PropertySpec, ...]
    state: tuple[str, ...] = ()
    features: tuple[int, ...] = (8, 769)
    paper: str = ""
    #: throughput benchmark cases (shapes, dtypes, passes, baseline; optional `cuda` overrides), see
    #: normbench.bench; empty when the family declares none (it is then not benchmarked).
    benchmark: Mapping[str, Any] = field(default_factory=dict)
    #: checks that do not apply to the family, with the reason (a check every family must plan or waive)
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return tuple(self.tolerances)

    def default_params(self, **overrides: Any) -> dict[str, Any]:
        """The constructor parameters, exactly the declared ones (conventions only when overridden), with
        overrides applied."""
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            raise KeyError(f"family {self.family!r} declares no parameter(s) {unknown}")
        params = {name: p.default for name, p in self.params.items() if not p.convention}
        params.update(overrides)
        return params

    def tolerance(self, dtype: str, kind: Literal["forward", "backward", "reduction"]) -> Tolerance:
        try:
            return self.tolerances[dtype][kind]
        except KeyError:
            raise SpecError(self.path, f"tolerances.{dtype}.{kind}", "no tolerance declared") from None


@cache
def _schema() -> dict[str, Any]:
    return json.loads(resources.files("normbench.specs").joinpath("schema.json").read_text())


def _key_of(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _parse_yaml(path: Path) -> Any:
    """The file's data: a regular UTF-8 file of at most 1 MiB, nested at most 32 deep, no alias of a collection
    (normbench.safe_yaml); anything else is a SpecError naming the file."""
    try:
        return safe_yaml.load_file(path)
    except safe_yaml.YamlFileError as exc:
        raise SpecError(path, exc.where, exc.message) from None


def _non_finite(data: Any, key: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], float] | None:
    """The key path and value of the first .inf / .nan in `data`, or None. YAML reads `.inf` and `.nan` as
    floats that JSON Schema bounds do not exclude (NaN compares false to every bound), and an infinite
    tolerance passes anything, an aliasing module included."""
    if isinstance(data, float) and not math.isfinite(data):
        return key, data
    if isinstance(data, dict):
        items: Iterable[tuple[Any, Any]] = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, (*key, k))
        if found is not None:
            return found
    return None


def _check_reference(path: Path, name: str) -> None:
    """The spec's reference module exists and exposes `build`: checked here, so a spec naming a missing one is
    a spec error rather than an error of every implementation judged against it."""
    module_name = f"normbench.reference.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise SpecError(path, "reference", f"no reference module {module_name!r} (one file per family "
                            "under reference/)") from None
        raise SpecError(path, "reference", f"importing {module_name!r} raised {type(exc).__name__}: "
                        f"{exc}") from None
    except Exception as exc:  # a broken reference module: say so instead of blaming the implementations
        raise SpecError(path, "reference", f"importing {module_name!r} raised {type(exc).__name__}: "
                        f"{exc}") from None
    if not callable(getattr(module, "build", None)):
        raise SpecError(path, "reference", f"reference module {module_name!r} has no callable 'build' "
                        "(build(num_features, **params) -> nn.Module)")


def _validate(path: Path, data: Any, definition: str | None = None) -> None:
    """Validate against the spec schema, or against its `$defs/<definition>` (the defaults file)."""
    schema = _schema()
    if definition is not None:
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    error = errors[0]
    # For oneOf failures the most specific sub-error says what is really wrong.
    best = jsonschema.exceptions.best_match([error]) if error.context else error
    key = _key_of(best.absolute_path)
    message = best.message
    if best.validator == "additionalProperties":
        message = f"unknown key: {message}"
    raise SpecError(path, key, message)


def _refuse_non_finite(path: Path, data: Any) -> None:
    bad = _non_finite(data)
    if bad is not None:
        key, value = bad
        raise SpecError(path, _key_of(key), f"{value} is not a finite number (tolerances and every other "
                        "number in a spec must be finite)")


def builtin_defaults_path() -> Path:
    """The property defaults shipped with normbench (specs/defaults.yaml)."""
    return Path(str(resources.files("normbench.specs").joinpath(DEFAULTS_FILE)))


def load_defaults(path: str | Path | None = None,
                  known_checks: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The property defaults of `path` (the shipped specs/defaults.yaml when None), validated against the schema's
    `$defs/defaults_file`; raises SpecError naming the file and key."""
    path = builtin_defaults_path() if path is None else Path(path)
    data = _parse_yaml(path)
    _refuse_non_finite(path, data)
    _validate(path, data, "defaults_file")
    defaults = {name: dict(fields) for name, fields in data["defaults"].items()}
    if known_checks is not None:
        known = set(known_checks)
        for name in defaults:
            # keyed by property name, and a default is for a check every family plans under its own name: a key
            # naming no check is a typo that would silently drop its fields from every spec
            if name not in known:
                raise SpecError(path, f"defaults.{name}", f"no registered check {name!r}; registered checks: "
                                f"{sorted(known)}")
    return defaults


def _is_short_form(raw: Any) -> bool:
    """`name: holds` or `name: {train: ..., eval: ...}`: an expectation without a block around it."""
    return isinstance(raw, str) or (isinstance(raw, dict) and bool(raw) and set(raw) <= {"train", "eval"})


def _with_defaults(properties: Any, defaults: Defaults) -> Any:
    """The spec's properties with each one's defaults filled in; a field the property gives replaces the default's
    whole (options are not merged key by key)."""
    if not isinstance(properties, dict):
        return properties  # the schema refuses it, naming the key
    expanded = {}
    for name, raw in properties.items():
        default = defaults.get(name)
        if default is None:
            expanded[name] = raw
        elif _is_short_form(raw):
            expanded[name] = {**default, "expect": raw}
        elif isinstance(raw, dict):
            expanded[name] = {**default, **raw}
        else:
            expanded[name] = raw
    return expanded


def _expectations(path: Path, key: str, raw: Any) -> dict[str, Expectation]:
    if isinstance(raw, str):
        return {"any": raw}  # type: ignore[dict-item]
    if not raw:
        raise SpecError(path, key, "per-mode expectation needs at least one of train / eval")
    return dict(raw)


def _property(path: Path, name: str, raw: Any, known_checks: Iterable[str] | None) -> PropertySpec:
    key = f"properties.{name}"
    if isinstance(raw, dict) and "expect" in raw:
        check = raw.get("check", name)
        prop = PropertySpec(
            name=name,
            check=check,
            expect=_expectations(path, f"{key}.expect", raw["expect"]),
            dtypes=tuple(raw["dtypes"]) if "dtypes" in raw else None,
            options=dict(raw.get("options", {})),
            timeout=raw.get("timeout"),
            why=raw.get("why", ""),
        )
    else:
        prop = PropertySpec(name=name, check=name, expect=_expectations(path, key, raw))
    if known_checks is not None and prop.check not in set(known_checks):
        raise SpecError(path, key, f"unknown check {prop.check!r}; registered checks: {sorted(known_checks)}")
    return prop


def load_spec(path: str | Path, known_checks: Iterable[str] | None = None, defaults: Defaults | None = None) -> Spec:
    """Load and validate one spec file, its properties completed from `defaults` (the shipped specs/defaults.yaml
    when None); raises SpecError naming the file and key."""
    path = Path(path)
    if defaults is None:
        defaults = load_defaults()
    data = _parse_yaml(path)
    _refuse_non_finite(path, data)
    written = data.get("properties") if isinstance(data, dict) else None
    if written is not None:
        data = {**data, "properties": _with_defaults(written, defaults)}
    _validate(path, data)
    _check_reference(path, data["reference"])
    known = list(known_checks) if known_checks is not None else None
    layout = data["layout"]
    params = {}
    for name, raw in data["params"].items():
        choices = tuple(raw["choices"]) if "choices" in raw else None
        param = ParamSpec(name=name, type=raw["type"], default=raw["default"], nullable=raw.get("nullable", False),
                          choices=choices, convention=raw.get("convention", False))
        default = param.default
        if choices is not None and default not in choices:
            raise SpecError(path, f"params.{name}.default", f"{default!r} is not one of the choices {list(choices)}")
        ok = (default is None and param.nullable) or (param.type == "string" and isinstance(default, str)) or (
            param.type == "boolean" and isinstance(default, bool)
        ) or (param.type == "integer" and isinstance(default, int) and not isinstance(default, bool)) or (
            param.type == "number" and isinstance(default, int | float) and not isinstance(default, bool)
        )
        if not ok:
            raise SpecError(path, f"params.{name}.default", f"{default!r} is not of type {param.type}")
        params[name] = param
    tolerances = {
        dtype: {kind: Tolerance(**tol) for kind, tol in kinds.items()}
        for dtype, kinds in data["tolerances"].items()
    }
    properties = tuple(_property(path, name, raw, known) for name, raw in data["properties"].items())
    not_applicable = dict(data.get("not_applicable", {}))
    planned = {prop.check for prop in properties}
    for check in not_applicable:
        key = f"not_applicable.{check}"
        if check in planned:
            raise SpecError(path, key, f"check {check!r} is also planned under properties; a family either plans "
                            "a check or says why it does not apply, not both")
        if known is not None and check not in set(known):
            raise SpecError(path, key, f"unknown check {check!r}; registered checks: {sorted(known)}")
    for prop in properties:
        for dtype in prop.dtypes or ():
            if dtype not in tolerances:
                block = written[prop.name]
                origin = "" if isinstance(block, dict) and "dtypes" in block else \
                    f" (the dtypes of its default in {DEFAULTS_FILE}; give the property its own)"
                raise SpecError(path, f"properties.{prop.name}.dtypes",
                                f"{dtype} has no entry under tolerances{origin}")
    return Spec(
        family=data["family"],
        summary=data["summary"],
        path=str(path),
        reference=data["reference"],
        layout=Layout(
            features_axis=layout["features_axis"],
            ranks=tuple(layout["ranks"]),
            reduce=layout["reduce"],
            moments=layout["moments"],
            description=layout.get("description", ""),
        ),
        params=params,
        tolerances=tolerances,
        properties=properties,
        state=tuple(data.get("state", ())),
        features=tuple(data.get("features", (8, 769))),
        paper=data.get("paper", ""),
        benchmark=data.get("benchmark", {}),
        not_applicable=not_applicable,
    )


def builtin_spec_paths() -> list[Path]:
    """The spec files shipped with normbench."""
    root = resources.files("normbench.specs")
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml") and p.name != DEFAULTS_FILE)


@dataclass
class SpecSet:
    """Every spec found, and every spec that failed to load (reported, never fatal)."""

    specs: dict[str, Spec] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)


def load_specs(extra_dirs: Iterable[str | Path] = (), known_checks: Iterable[str] | None = None) -> SpecSet:
    """Load the built-in specs and any *.yaml under extra_dirs (--spec-dir); a bad file, or an extra dir that is not a
    directory, is recorded, not raised, and the other specs still load."""
    known = list(known_checks) if known_checks is not None else None
    paths = builtin_spec_paths()
    result = SpecSet()
    try:
        defaults = load_defaults(known_checks=known)
    except SpecError as exc:  # every spec is read through them: one error, not one per spec
        result.errors.append(exc)
        return result
    for directory in map(Path, extra_dirs):
        if not directory.is_dir():
            what = "not a directory" if directory.exists() else "no such directory"
            result.errors.append(SpecError(directory, "", f"--spec-dir: {what}"))
            continue
        paths.extend(sorted(directory.glob("*.yaml")))
    for path in paths:
        try:
            spec = load_spec(path, known, defaults)
        except SpecError as exc:
            result.errors.append(exc)
            continue
        except Exception as exc:  # a loader bug must not stop the other specs: say which file, and what
            result.errors.append(SpecError(path, "", f"loading raised {type(exc).__name__}: {exc}"))
            continue
        if spec.family in result.specs:
            result.errors.append(SpecError(path, "family", f"{spec.family!r} is already defined by "
                                           f"{result.specs[spec.family].path}"))
            continue
        result.specs[spec.family] = spec
    return result
