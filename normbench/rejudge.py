"""Re-judging one recorded item outside the suite: what a `normbench repro` script that needs normbench runs.

The script (normbench.cli.repro) imports the plugin itself, the way the run was given it (a module, a file by path,
an entry point by group and name), and hands the object it found to `rejudge`, which rebuilds the plan item from
the record (spec, implementation, check, mode, dtype, device, variant, hypothesis profile) and runs
`normbench.runner.judge` on it, the function the suite's judging processes run. Its checks draw their cases from
seeds derived from the item (and hypothesis derandomized), so the same code judges the same inputs the recorded run
did. The exit status is the script's contract:

- 1 (`REPRODUCED`): the item fails again;
- 0 (`NOT REPRODUCED`): it passes now;
- 2 (`CANNOT RUN`): it could not be judged here (the plugin no longer provides the implementation, the spec has no
  such property, no CUDA device, the implementation raised), with the reason. Never 1: an item that did not run
  must not read as reproduced.

A record's `implementations[name]["plugin"]` (written by the suite, `plugin_entry`) says how to import the plugin;
for a record older than that field, `plugin_from_label` reads the source label (`entry point 'x' (pkg.mod:attr)`,
`--impl-path target:attr`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from normbench.registry import ENTRY_POINT_GROUP
from normbench.verdicts import Verdict

REPRODUCED, PASSES_NOW, CANNOT_RUN = 1, 0, 2
#: metrics printed first, when a check measured them: how far from its bound the item was
DEVIATION_KEYS = ("tol_ratio", "max_abs", "max_rel", "max_ulp")


class CannotRejudge(Exception):  # noqa: N818 - reads as `raise CannotRejudge("why")`
    """The item cannot be judged here; the message says why and what to do."""


# -- how the plugin was given ---------------------------------------------------------------------------------

def is_file_target(target: str) -> bool:
    """Whether an --impl-path target names a file (normbench.registry.load_path's rule), not a module."""
    return target.endswith(".py") or "/" in target or "\\" in target


def file_module_name(path: str | Path) -> str:
    """The module name normbench.registry imports a plugin file under (derived from its resolved path), so the
    script's import of the file is the run's."""
    resolved = Path(path).resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    return f"_normbench_impl_path_{stem}_{digest}"


def _path_plugin(spec: str, cwd: Path | None) -> dict[str, str]:
    target, _, attr = spec.rpartition(":")
    if is_file_target(target):
        file = Path(target)
        if cwd is not None:
            file = (cwd / file).resolve()  # a relative --impl-path is relative to the folder the run started in
        return {"kind": "file", "path": str(file), "attr": attr}
    return {"kind": "module", "module": target, "attr": attr}


def plugin_entry(source: tuple[str, ...], cwd: Path) -> dict[str, str]:
    """How to import a plugin again, from normbench.sandbox's Source (("entry_point", name, value) or
    ("path", "target:attr")): what the record keeps beside the source label. A relative file path is made absolute
    against `cwd`, the folder the run started in (the label keeps it as the user typed it)."""
    if source[0] == "entry_point":
        return {"kind": "entry_point", "group": ENTRY_POINT_GROUP, "name": source[1], "value": source[2]}
    return _path_plugin(source[1], cwd)


def plugin_from_label(label: str) -> dict[str, str] | None:
    """The plugin entry read from a source label, for records older than the `plugin` field; None when the label
    is neither form. A relative file path stays relative (the run's folder is not known)."""
    if label.startswith("entry point '") and label.endswith(")") and "' (" in label:
        name, _, value = label[len("entry point '"):-1].partition("' (")
        return {"kind": "entry_point", "group": ENTRY_POINT_GROUP, "name": name, "value": value}
    if label.startswith("--impl-path ") and ":" in label:
        return _path_plugin(label[len("--impl-path "):], None)
    return None


def describe_plugin(plugin: Mapping[str, str]) -> str:
    if plugin["kind"] == "entry_point":
        return f"entry point {plugin['name']!r} of group {plugin['group']!r} ({plugin['value']})"
    if plugin["kind"] == "file":
        return f"file {plugin['path']} (attribute {plugin['attr']!r})"
    return f"module {plugin['module']} (attribute {plugin['attr']!r})"


# -- rebuilding and judging the item --------------------------------------------------------------------------

def _implementation(found: Any, item: Mapping[str, Any]) -> Any:
    from normbench.implementation import Implementation, ImplementationError
    from normbench.registry import PluginUnavailable, _resolve

    name = item["implementation"]
    where = item.get("source") or "the plugin"
    try:
        entries = _resolve(found, where)
    except ImplementationError as exc:
        raise CannotRejudge(f"{where}: {exc}") from None
    for entry in entries:
        if isinstance(entry, PluginUnavailable) and entry.name == name:
            raise CannotRejudge(f"implementation {name!r} is unavailable here: {entry.reason}")
        if isinstance(entry, Implementation) and entry.name == name:
            return entry
    names = sorted(e.name for e in entries if isinstance(e, Implementation))
    raise CannotRejudge(f"{where} no longer provides an implementation named {name!r} (it provides "
                        f"{', '.join(map(repr, names)) or 'none'})")


def _spec(item: Mapping[str, Any]) -> Any:
    from normbench.checks.base import CHECKS
    from normbench.spec import SpecError, load_spec, load_specs

    family = item["family"]
    spec_file = item.get("spec_file")
    if spec_file:
        try:
            spec = load_spec(spec_file, known_checks=CHECKS)
        except (SpecError, OSError) as exc:
            raise CannotRejudge(f"the spec of family {family!r} ({spec_file}) cannot be loaded: {exc}") from None
        if spec.family != family:
            raise CannotRejudge(f"{spec_file} now defines family {spec.family!r}, not {family!r}")
        return spec
    specs = load_specs(known_checks=CHECKS).specs
    if family not in specs:
        raise CannotRejudge(f"this normbench has no spec of family {family!r} (it was given by --spec-dir? the "
                            "record names no spec file)")
    return specs[family]


def plan_item(item: Mapping[str, Any], found: Any) -> Any:
    """The PlanItem the record names, with the implementation taken from what the plugin's import gave."""
    import torch

    from normbench.runner import PlanItem
    from normbench.variants import DEFAULT_VARIANT

    impl = _implementation(found, item)
    spec = _spec(item)
    if impl.family != spec.family:
        raise CannotRejudge(f"implementation {impl.name!r} is now of family {impl.family!r}, not {spec.family!r}")
    prop = next((p for p in spec.properties if p.name == item["property"]), None)
    if prop is None:
        raise CannotRejudge(f"the spec of {spec.family!r} ({spec.path}) has no property {item['property']!r} now")
    if prop.check != item["check"]:
        raise CannotRejudge(f"property {prop.name!r} is judged by check {prop.check!r} now, not {item['check']!r}")
    if item["mode"] not in prop.expect:
        raise CannotRejudge(f"property {prop.name!r} has no expectation in mode {item['mode']!r} now")
    if item["dtype"] not in spec.tolerances:
        raise CannotRejudge(f"the spec of {spec.family!r} declares no tolerance for {item['dtype']} now")
    device = item.get("device") or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CannotRejudge(f"the item was judged on {device}, and this machine has no CUDA device")
    return PlanItem(spec, impl, prop, item["mode"], item["dtype"], device, item.get("variant") or DEFAULT_VARIANT)


@contextlib.contextmanager
def _hypothesis_storage() -> Iterator[None]:
    """Hypothesis caches constants of every module it sees in ./.hypothesis: a repro run writes nothing where it is
    started (the suite keeps it out of the folder too)."""
    import os

    from hypothesis.configuration import set_hypothesis_home_dir

    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    folder = tempfile.mkdtemp(prefix="normbench-repro-hypothesis-")
    set_hypothesis_home_dir(folder)
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)
        shutil.rmtree(folder, ignore_errors=True)


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return str(value)


def deviation_lines(metrics: Mapping[str, Any], recorded: Mapping[str, Any]) -> list[str]:
    """The measured numbers, the ratio to the bound first (err / bound: over 1 fails), each beside the recorded."""
    keys = [k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    keys.sort(key=lambda k: (next((i for i, d in enumerate(DEVIATION_KEYS) if k.split(".")[-1] == d),
                                  len(DEVIATION_KEYS)), k))
    lines = []
    for key in keys[:24]:
        was = recorded.get(key)
        then = f" (recorded {_number(was)})" if isinstance(was, int | float) and not isinstance(was, bool) else ""
        what = " = error / bound" if key.split(".")[-1] == "tol_ratio" else ""
        lines.append(f"  {key}{what}: {_number(metrics[key])}{then}")
    return lines


def rejudge(item: Mapping[str, Any], found: Any) -> int:
    """Judge the recorded `item` (its outcome fields plus `profile`, `source`, `spec_file`) on the object the
    plugin's import gave (`found`: what its entry point or `module:attr` names), print the measured deviation
    against the bound beside the recorded one, and return the exit status (REPRODUCED, PASSES_NOW, CANNOT_RUN)."""
    try:
        import torch

        from normbench.runner import judge
        from normbench.variants import DEFAULT_VARIANT, prepare

        planned = plan_item(item, found)
        torch.set_num_threads(1)  # as the suite's judging processes: a kernel's rounding can depend on it
        if planned.variant != DEFAULT_VARIANT:
            prepare(planned.variant)
        with _hypothesis_storage():
            outcome = judge(planned, str(item.get("profile") or "ci"))
    except CannotRejudge as exc:
        print(f"CANNOT RUN: {exc}")
        return CANNOT_RUN
    except Exception as exc:  # normbench could not build the item: a cause to read, never a reproduction
        print(f"CANNOT RUN: re-judging raised {type(exc).__name__}: {exc}")
        return CANNOT_RUN
    print(f"{outcome.test_id} ({item.get('source', '')}): profile {item.get('profile') or 'ci'}, torch "
          f"{torch.__version__} (recorded with torch {item.get('torch_version')} on {item.get('machine')}, "
          f"{item.get('recorded_utc')})")
    print(f"expected: {outcome.expect}; observed now: {outcome.observed or 'nothing (no verdict)'}")
    print(f"now:      {outcome.summary}")
    print(f"recorded: {item.get('summary', '')}")
    lines = deviation_lines(outcome.metrics, item.get("metrics") or {})
    if lines:
        print("measured (recorded):")
        print("\n".join(lines))
    if item.get("counterexample"):
        print(f"recorded counterexample: {item['counterexample']}")
    if outcome.counterexample:
        print(f"counterexample now:      {outcome.counterexample}")
    if outcome.verdict == Verdict.FAIL:
        print(f"REPRODUCED: {outcome.test_id} fails again")
        return REPRODUCED
    if outcome.verdict in (Verdict.PASS, Verdict.REPORT):
        print(f"NOT REPRODUCED: {outcome.test_id} passes now")
        return PASSES_NOW
    print(f"CANNOT RUN: the item was not judged here ({outcome.verdict}): {outcome.summary}")
    return CANNOT_RUN


def main(item: Mapping[str, Any], load: Any) -> int:
    """The script's entry: `load()` imports the plugin (the script's own code, the way the run was given it); any
    failure there is CANNOT_RUN with the error, SystemExit from the plugin's import included."""
    try:
        found = load()
    except (Exception, SystemExit) as exc:
        print(f"CANNOT RUN: importing the plugin ({describe_plugin(item['plugin'])}) raised "
              f"{type(exc).__name__}: {exc}")
        hint = _import_hint(item["plugin"])
        if hint:
            print(hint)
        return CANNOT_RUN
    status = rejudge(item, found)
    sys.stdout.flush()
    return status


def _import_hint(plugin: Mapping[str, str]) -> str:
    if plugin["kind"] == "module":
        top = plugin["module"].split(".")[0]
        return (f"(run the script where {top!r} is importable: installed, or its folder on PYTHONPATH, as it was "
                "for the recorded run)")
    if plugin["kind"] == "entry_point":
        return "(install the distribution that declares the entry point in this environment)"
    return ""
