"""pytest integration: `pytest suite` turns the plan into test items, records outcomes, prints the matrix.

Registered through the `pytest11` entry point, so its options exist wherever normbench is installed. Items are
collected from the packaged suite, normbench/suite/conformance.py (`pytest --pyargs normbench.suite`,
`normbench test`), or a clone's suite/conformance.py (`pytest suite`), by a hook (that file is not a test module: its
name does not match test_*.py), one item per plan entry, named with the stable test id, e.g.
``layernorm[torch.nn.LayerNorm-shift_invariance-float32]``.

Fail closed: every item is judged in a sandbox process (normbench.sandbox), so a crash, exit,
hang or state change of one implementation is an ``error`` of that implementation's item and nothing else;
every selected item that a lost xdist worker never reported is judged by the controller at the end (except the
items of the implementation the worker was judging), and any item still without an outcome is an error that
says so (an interrupted run keeps the stored outcome of an item it never ran, marked ``stale``); every planned
item that this run did not select is recorded as ``unjudged``, so an implementation is said to conform only when
its whole plan was judged and met the spec. Before records are written, every process a plugin started is ended
(normbench.strays), and the record is sealed with the run's secret and checked when read back
(normbench.store.seal).
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import normbench.suite
from normbench import run_accounting
from normbench.checks.base import CHECKS, PROFILES
from normbench.known_failures import (
    KnownFailures,
    KnownFailuresError,
    inherited_failure,
    inherited_reason,
    load_known_failures,
)
from normbench.outcome import ItemKey, Outcome
from normbench.publish.terminal import summary_lines, totals_line, write_matrix
from normbench.runner import PlanItem, build_plan, error_outcome
from normbench.sandbox import (
    IMPORT_CHANGES,
    Limits,
    SandboxPool,
    discover_isolated,
    start_forkserver,
    warm_variants,
)
from normbench.spec import load_specs
from normbench.stale_known_failures import files_for_missing_implementations, stale_entries
from normbench.stale_known_failures import known_entry_applies as entry_applies_to_variant
from normbench.store.errors import ForgedRecord, ResultsError
from normbench.store.files import write_fallback
from normbench.store.records import DEFAULT_RESULTS_DIR, conformance_record, unit_of
from normbench.store.scan import validate_results_dir
from normbench.store.write import store_conformance
from normbench.variants import DEFAULT_VARIANT, VARIANTS
from normbench.verdicts import INHERITED, NOT_CONFORMING, WORDS, Counts, Verdict, did_you_mean, plain, plural
from normbench_forkserver import discard_early, names_the_suite

#: the report attribute that carries an item's outcome to the controller (xdist serializes report attributes)
STASH_KEY = "normbench_outcome"
CONFIGURATION_PREFIXES = ("spec_error", "plugin_error", "unknown_impl", "known_failures_error", "plugin_unavailable")
#: the packaged suite (normbench_forkserver.SUITE_PACKAGE): where the built-in known failures are
SUITE_DIR = Path(normbench.suite.__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("normbench")
    group.addoption("--impl", action="append", default=[], metavar="NAME",
                    help="judge only this implementation (repeatable)")
    group.addoption("--impl-path", action="append", default=[], metavar="MODULE:ATTR",
                    help="also judge an implementation that is not installed (repeatable)")
    group.addoption("--no-entry-points", action="store_true",
                    help="ignore installed entry points (judge only --impl-path implementations)")
    group.addoption("--spec-dir", action="append", default=[], metavar="DIR",
                    help="extra directory of family specs (*.yaml)")
    group.addoption("--profile", choices=sorted(PROFILES), default=os.environ.get("NORMBENCH_PROFILE", "ci"),
                    help="hypothesis profile (env NORMBENCH_PROFILE); default ci")
    group.addoption("--results-dir", default=None, metavar="DIR",
                    help=f"where results are written (default: ./{DEFAULT_RESULTS_DIR}, in the current folder)")
    group.addoption("--no-record", action="store_true", help="do not write results or the leaderboard")
    group.addoption("--known-failures", action="append", default=[], metavar="PATH",
                    help="extra known-failures YAML file or directory (repeatable)")
    group.addoption("--check-timeout", type=float, default=Limits.item_timeout, metavar="SECONDS",
                    help="time limit per item; the implementation's process is killed past it (default %(default)s)")
    group.addoption("--impl-budget", type=float, default=Limits.impl_budget, metavar="SECONDS",
                    help="time budget per implementation and process; its remaining items are errors past it "
                         "(default %(default)s)")
    group.addoption("--child-memory", type=float, default=None, metavar="GIB",
                    help="address-space limit of each implementation's process, in GiB (default: the memory "
                         "divided by twice the cores, 2 to 16 GiB)")
    group.addoption("--matrix", action="store_true",
                    help="print the full conformance matrix (one column per implementation) at the end, as -v does")
    group.addoption("--device", action="append", default=[], choices=["cpu", "cuda"],
                    help="devices to judge on (default: cpu, plus cuda where available)")
    group.addoption("--variant", action="append", default=[], choices=list(VARIANTS),
                    help="deployment variant to judge (repeatable): eager (default), compile (torch.compile, "
                         "Inductor), export (torch.export to ONNX, run in ONNX Runtime)")
    group.addoption("--variant-plan", choices=["bounded", "full"], default="bounded",
                    help="under compile / export, judge the bounded plan (the properties and dtypes deployment can "
                         "change, see docs/variants.md) or every property in every dtype (default %(default)s)")
    group.addoption("--triton-interpret", action="store_true",
                    help="judge Triton kernels on CPU through Triton's interpreter (TRITON_INTERPRET=1 in the judging "
                         "processes); one the interpreter cannot run is one explained skip")


class Plan:
    """Everything collection needs, computed once per process. Plugins are imported in child processes only
    (normbench.sandbox): a plugin that crashes or exits at import is that plugin's error, never the run's."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        specs = load_specs(opt.spec_dir, known_checks=CHECKS)
        self.specs = specs.specs
        self.spec_errors = specs.errors
        self.limits = limits_from(config)
        self.registry = discover_isolated(opt.impl_path, families=specs.specs,
                                          include_entry_points=not opt.no_entry_points, limits=self.limits)
        unknown = sorted(set(opt.impl) - set(self.registry.implementations))
        self.unknown_impls = unknown
        devices = opt.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
        self.devices = devices
        from normbench.triton_interpret import InterpreterPlan, plan_for_interpreter

        #: --triton-interpret: the implementations the interpreter cannot run, and the dtypes it cannot judge
        self.interpreter = (plan_for_interpreter(self.registry, opt.impl, specs.specs, self.limits)
                            if opt.triton_interpret else InterpreterPlan())
        #: selected implementations that declare no device of this run: one explained skip each, never silence
        self.no_device = [impl for impl in sorted(self.registry.implementations.values(), key=lambda i: i.name)
                          if (not opt.impl or impl.name in opt.impl) and not set(impl.devices) & set(devices)
                          and impl.name not in self.interpreter.skips]
        self.items = [item for item in build_plan(specs.specs, self.registry, opt.impl, devices,
                                                  opt.variant or [DEFAULT_VARIANT],
                                                  full_variant_plan=opt.variant_plan == "full")
                      if item.impl.name not in self.interpreter.skips]
        self.by_id = {item.test_id: item for item in self.items}
        self.known: KnownFailures = _known_failures(config)


def _known_failures(config: pytest.Config) -> KnownFailures:
    """Loaded once per process, at configure time, so a missing --known-failures path is a usage error
    before anything is collected or judged."""
    known = getattr(config, "_normbench_known", None)
    if known is None:
        try:
            known = load_known_failures(map(Path, config.option.known_failures),
                                        builtin=SUITE_DIR / "known_failures")
        except KnownFailuresError as exc:
            raise pytest.UsageError(f"--known-failures: {exc}") from None
        config._normbench_known = known  # type: ignore[attr-defined]
    return known


def limits_from(config: pytest.Config) -> Limits:
    opt = config.option
    memory = int(opt.child_memory * 2**30) if opt.child_memory else Limits().memory_bytes
    return Limits(item_timeout=opt.check_timeout, impl_budget=opt.impl_budget, memory_bytes=memory,
                  triton_interpret=opt.triton_interpret,
                  hypothesis_home=os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"))


def _plan(config: pytest.Config) -> Plan:
    plan = getattr(config, "_normbench_plan", None)
    if plan is None:
        plan = Plan(config)
        config._normbench_plan = plan  # type: ignore[attr-defined]
    return plan


def _pool(config: pytest.Config) -> SandboxPool:
    pool = getattr(config, "_normbench_pool", None)
    if pool is None:
        plan = _plan(config)
        pool = SandboxPool(plan.specs, config.option.profile, plan.limits)
        config._normbench_pool = pool  # type: ignore[attr-defined]
    return pool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "normbench: a conformance item")
    if _collects_conformance(config):
        # One thread per process: deterministic, and xdist workers do not fight over the two cores. Only in a
        # conformance run: the entry point loads this plugin into every pytest session of the environment.
        torch.set_num_threads(1)
        _keep_hypothesis_storage_out_of_the_folder(config)
        _one_collection_at_the_end(config)
    config._normbench_outcomes = {}  # type: ignore[attr-defined]
    config._normbench_expected = set()  # type: ignore[attr-defined]
    #: the items a lost xdist worker was running (xdist blames the item it was on)
    config._normbench_crashed = set()  # type: ignore[attr-defined]
    if _collects_conformance(config):
        from normbench.strays import become_subreaper

        # What a plugin starts and orphans is re-parented here, not to init, so it is found and ended before the
        # records are written (normbench.strays).
        become_subreaper()
    _known_failures(config)
    if _is_controller(config) and _collects_conformance(config):
        # Before any plugin is imported (discovery runs at collection): what the verdicts are computed from.
        from normbench.integrity import digest, judged_paths

        roots = judged_paths([*config.option.spec_dir, *config.option.known_failures])
        config._normbench_judged_files = (roots, digest(roots))  # type: ignore[attr-defined]
        from normbench.store.seal import new_key

        # This run's secret (normbench.store.seal): in this process's memory only, made before any plugin runs.
        config._normbench_run_key = new_key()  # type: ignore[attr-defined]
    if _is_controller(config) and not config.option.no_record and _collects_conformance(config):
        # A results folder that cannot take the record must stop the run before anything is judged.
        try:
            validate_results_dir(_results_dir(config))
        except ResultsError as exc:
            raise pytest.UsageError(f"--results-dir: {exc}") from None
    if _collects_conformance(config):
        # The forkserver imports torch and normbench (2 s) while this process loads the specs and collects
        # (normbench_entry may have started it already, before this process imported torch).
        # An xdist controller only discovers; the processes that judge warm the variants' compilers once.
        if getattr(config, "workerinput", None) is not None or config.getoption("dist", "no") == "no":
            warm_variants(config.option.variant or ())
        start_forkserver()
    else:
        discard_early()  # normbench_entry's guess from the command line was wrong: nothing here judges


def _collects_conformance(config: pytest.Config) -> bool:
    """Whether this run collects the suite (`suite`, `--pyargs normbench.suite`, a conformance.py node id), not only
    other tests: only then is the results folder validated before the run."""
    return names_the_suite([str(a) for a in config.args], pyargs=bool(config.option.pyargs))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The normbench version in the run header (pytest's own --version is pytest's; `normbench --version` too)."""
    if not _collects_conformance(config):
        return []
    import normbench
    from normbench.judge_user import describe
    from normbench.store.machine import normbench_commit

    return [f"normbench {normbench.__version__} (commit {normbench_commit()}), torch {torch.__version__}", describe()]


def _keep_hypothesis_storage_out_of_the_folder(config: pytest.Config) -> None:
    """Hypothesis caches the constants of every module outside site-packages in ./.hypothesis/constants of the
    current folder, database or not: a run from a plugin's repository would write there. The judging processes (the
    forkserver and its children inherit the environment) keep it in normbench's cache folder instead, or under
    --no-record, which writes nothing, in a temporary folder removed at the end. A HYPOTHESIS_STORAGE_DIRECTORY the
    user set is left as it is."""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    from normbench.ecosystem.hf import cache_dir

    if config.option.no_record:
        folder = Path(tempfile.mkdtemp(prefix="normbench-hypothesis-"))
        config._normbench_scratch = folder  # type: ignore[attr-defined]
    else:
        folder = cache_dir() / "hypothesis"
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(folder)
    set_hypothesis_home_dir(folder)
    config._normbench_set_storage = True  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = getattr(config, "_normbench_pool", None)
    if pool is not None:
        pool.close()
    if getattr(config, "_normbench_set_storage", False):
        from hypothesis.configuration import set_hypothesis_home_dir

        os.environ.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)
        set_hypothesis_home_dir(None)
    scratch = getattr(config, "_normbench_scratch", None)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


class ConfigurationItem(pytest.Item):
    """A spec or plugin that could not be loaded: one failing item with a clear message."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def runtest(self) -> None:
        setattr(self, STASH_KEY, Outcome.unplanned(self.name, Verdict.ERROR, self.message))
        raise ConformanceFailure(self.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, self.name


class UnavailableItem(ConfigurationItem):
    """A plugin (or part of one) whose library is missing or broken here: one skipped item with the reason."""

    def runtest(self) -> None:
        setattr(self, STASH_KEY, Outcome.unplanned(self.name, Verdict.SKIP, self.message))
        pytest.skip(self.message)


class NoDeviceItem(pytest.Item):
    """An implementation whose declared devices this run has none of (a CUDA-only plugin on a CPU machine): one
    skipped item of that implementation, saying so, so the run is neither silent nor "no tests ran"."""

    def __init__(self, *, outcome: Outcome, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.outcome = outcome

    def runtest(self) -> None:
        setattr(self, STASH_KEY, self.outcome)
        pytest.skip(self.outcome.summary)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, self.name


def no_device_outcome(impl: Any, devices: list[str]) -> Outcome:
    """The skipped outcome of an implementation none of whose devices this run judges."""
    declared = ", ".join(impl.devices)
    if "cuda" in impl.devices and not torch.cuda.is_available():
        why = "this machine has no CUDA device"
    else:
        why = f"this run judges {', '.join(devices)} only (--device)"
    # one item per implementation, not a planned one: its id says "devices", and its record has no ulp field
    return Outcome(test_id=f"{impl.family}[{impl.name}-devices]", verdict=Verdict.SKIP,
                   summary=f"devices: declares {declared} only; {why}",
                   key=ItemKey(impl.family, impl.name, "devices", "any", "any", declared, DEFAULT_VARIANT),
                   check="devices", expect="holds", extra={"source": impl.source}, absent=frozenset({"ulp"}))


class ConformanceFailure(AssertionError):
    """The implementation was judged and missed the spec's expectation (a known failure may excuse it)."""


class ConformanceError(AssertionError):
    """No verdict: the implementation crashed, hung or tampered. A known failure never excuses it."""


def _base_outcome(item: PlanItem, verdict: Verdict, summary: str) -> Outcome:
    outcome = error_outcome(item, summary)
    outcome.verdict = verdict
    outcome.extra["source"] = item.impl.source
    return outcome


class ConformanceItem(pytest.Item):
    def __init__(self, *, plan_item: PlanItem, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_item = plan_item

    def runtest(self) -> None:
        item = self.plan_item
        # A torch op's known failure this item may inherit; its own known failure, if it has one, comes first.
        candidates = [] if self.get_closest_marker("xfail") else _plan(self.config).known.inheritable(
            item.test_id, item.impl.name, item.variant)
        ops = tuple(dict.fromkeys(op for entry in candidates for op in entry.aten_ops))
        # Identity fields are the plan's (the sandbox names the item from its arguments, never from the child): a
        # plugin cannot re-label its outcome.
        outcome = _pool(self.config).judge(item.impl, item.spec.family, item.prop.name, item.mode, item.dtype,
                                           item.device, item.variant, ops)
        outcome.extra["source"] = item.impl.source
        inherited = inherited_failure(candidates, outcome.metrics) if outcome.verdict == Verdict.FAIL else None
        if inherited is not None:
            outcome.extra[INHERITED] = inherited.inherited_label
        setattr(self, STASH_KEY, outcome)
        # --junitxml writes user properties: the verdict and the measured error of every item, for CI tools to show.
        self.user_properties += plain([("verdict", outcome.verdict), ("expect", outcome.expect),
                                       ("observed", outcome.observed), ("summary", outcome.summary[:1000])])
        self.user_properties += [(k, v) for k, v in outcome.metrics.items()
                                 if k == "tol_ratio" or k.endswith((".max_ulp", ".max_abs"))]
        if outcome.verdict == Verdict.SKIP:
            pytest.skip(outcome.summary)
        message = f"[{outcome.verdict}] {outcome.summary}" + _counterexample(outcome)
        if inherited is not None:
            pytest.xfail(inherited_reason(inherited))
        if outcome.verdict == Verdict.FAIL:
            raise ConformanceFailure(message + _repro_line(self.config, item.test_id))
        if outcome.verdict == Verdict.ERROR:
            raise ConformanceError(message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailure | ConformanceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, self.name


def _repro_line(config: pytest.Config, test_id: str) -> str:
    """The failure text's last line: the command that writes this item's reproduction script (it reads the record
    this run writes when it ends)."""
    from normbench.cli.repro import repro_command

    if config.option.no_record:
        return (f"\n  reproduce: this run records nothing (--no-record); run again without it, then "
                f"{repro_command(test_id)}")
    return f"\n  reproduce: {repro_command(test_id, config.option.results_dir)} -o repro.py && python repro.py"


def _counterexample(outcome: Outcome) -> str:
    return f"\n  counterexample: {outcome.counterexample}" if outcome.counterexample else ""


class ConformanceFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        plan = _plan(self.config)
        items: list[pytest.Item] = []
        for err in plan.spec_errors:
            items.append(ConfigurationItem.from_parent(self, name=f"spec_error[{Path(err.path).name}]",
                                                       message=f"bad spec: {err}"))
        seen: set[str] = set()
        for err in plan.registry.errors:
            name = f"plugin_error[{err.source}]"
            n = 2
            while name in seen:
                name, n = f"plugin_error[{err.source} #{n}]", n + 1
            seen.add(name)
            items.append(ConfigurationItem.from_parent(self, name=name, message=f"broken plugin: {err}"))
        for note in plan.registry.unavailable:
            items.append(UnavailableItem.from_parent(self, name=f"plugin_unavailable[{note.source}]",
                                                    message=f"not judged here: {note.message}"))
        for kerr in plan.known.errors:
            items.append(ConfigurationItem.from_parent(self, name=f"known_failures_error[{Path(kerr.path).name}]",
                                                       message=f"bad known-failures file: {kerr}"))
        for name in plan.unknown_impls:
            known = plan.registry.implementations
            items.append(ConfigurationItem.from_parent(
                self, name=f"unknown_impl[{name}]",
                message=f"--impl {name!r} matches no implementation{did_you_mean(name, known)}; `normbench list` "
                        f"prints all {plural(len(known), 'implementation')}"))
        for impl in plan.no_device:
            outcome = no_device_outcome(impl, plan.devices)
            items.append(NoDeviceItem.from_parent(self, name=outcome.test_id, outcome=outcome))
        for outcome in plan.interpreter.skips.values():
            items.append(NoDeviceItem.from_parent(self, name=outcome.test_id, outcome=outcome))
        for plan_item in plan.items:
            not_here = plan.interpreter.skip_reason(plan_item.impl.name, plan_item.dtype)
            if not_here is not None:
                outcome = _base_outcome(plan_item, Verdict.SKIP, not_here)
                items.append(NoDeviceItem.from_parent(self, name=plan_item.test_id, outcome=outcome))
                continue
            item = ConformanceItem.from_parent(self, name=plan_item.test_id, plan_item=plan_item)
            item.add_marker(pytest.mark.normbench)
            reason = _known_reason(plan.known, plan_item)
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=False, raises=ConformanceFailure))
            items.append(item)
        return items


def known_entry_applies(prefix: str, variant: str) -> bool:
    """Whether a known-failure entry applies to an item of `variant` (normbench.stale_known_failures)."""
    return entry_applies_to_variant(prefix, variant, DEFAULT_VARIANT, VARIANTS)


def _known_reason(known: KnownFailures, item: PlanItem) -> str | None:
    for entry in known.entries:
        if entry.matches(item.test_id, item.impl.name) and known_entry_applies(entry.prefix, item.variant):
            return f"{entry.reason} [{entry.source}]"
    return None


def _is_suite_file(file_path: Path) -> bool:
    """The packaged suite's conformance.py, or a clone's suite/conformance.py (a clone holds normbench/suite/ beside
    suite/). Nothing else: this plugin is loaded into every pytest session where normbench is installed."""
    if file_path.name != "conformance.py" or file_path.parent.name != "suite":
        return False
    folder = file_path.resolve().parent
    return folder == SUITE_DIR or (folder.parent / "normbench" / "suite" / "conformance.py").is_file()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_suite_file(file_path):
        return ConformanceFile.from_parent(parent, path=file_path)
    return None


def _is_conformance(nodeid: str) -> bool:
    return nodeid.split("::")[0].endswith("conformance.py") and "::" in nodeid


def _expect(config: pytest.Config, nodeids: list[str]) -> None:
    config._normbench_expected.update(n.split("::")[-1] for n in nodeids if _is_conformance(n))  # type: ignore[attr-defined]


def pytest_collection_finish(session: pytest.Session) -> None:
    _expect(session.config, [item.nodeid for item in session.items])
    if _collects_conformance(session.config):
        _freeze_the_heap()


def _one_collection_at_the_end(config: pytest.Config) -> None:
    """pytest's unraisable-exception plugin runs five full garbage collections at the end of a session, to surface
    the exceptions of a test's finalizers; a conformance run's items run no plugin code in this process (the plugin's
    objects live in its own), so one is enough: the other four cost 0.45 s of every run's wall time (py-spy of
    `pytest suite --impl torch.nn.LayerNorm -p no:xdist`, each xdist worker too). pytest's own key for it, where
    this pytest has one."""
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key
    except ImportError:
        return
    config.stash[gc_collect_iterations_key] = 1


def _freeze_the_heap() -> None:
    """What is allocated so far (torch, hypothesis, normbench, the plan: 200,000 objects) lives until the end: taken
    out of the garbage collector's reach, so its full collections (hypothesis's first draw makes one, pytest's
    unraisable-exception check five at the end, 0.11 s each) scan only what the items allocate."""
    gc.freeze()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    # The controller collects nothing under xdist: the workers' selected ids are what it must see judged.
    _expect(node.config, ids)


def _record_outcome(config: pytest.Config, report: pytest.TestReport) -> None:
    if not _is_conformance(report.nodeid):
        return
    test_id = report.nodeid.split("::")[-1]
    outcomes: dict[str, Outcome] = config._normbench_outcomes  # type: ignore[attr-defined]
    data = getattr(report, STASH_KEY, None)
    if report.when == "???":
        config._normbench_crashed.add(test_id)  # type: ignore[attr-defined]
    if data is None:
        if report.when == "call" or report.outcome != "passed":
            # crashed outside judging (a lost xdist worker reports when="???"): still an outcome for this item
            outcomes[test_id] = _unjudged(config, test_id, Verdict.ERROR,
                                          f"not judged: {str(report.longrepr)[-1500:]}")
        return
    outcome = Outcome.from_record(data)  # a record: it crossed from an xdist worker as plain data
    if hasattr(report, "wasxfail") and outcome.verdict == Verdict.FAIL:
        outcome.verdict = Verdict.XFAIL
        outcome.extra["known_failure"] = report.wasxfail
    outcomes[test_id] = outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    outcome = getattr(item, STASH_KEY, None)
    if call.when == "call" and outcome is not None:
        # as its record: an xdist worker sends it to the controller, and execnet carries builtin types only
        setattr(report, STASH_KEY, plain(outcome.to_record()))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _current_config
    if config is not None and report.when in ("setup", "call", "???"):
        _record_outcome(config, report)


_current_config: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _current_config
    _current_config = session.config
    if _collects_conformance(session.config):
        _freeze_the_heap()  # an xdist controller collects nothing: its heap is this


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under a deployment variant, one implementation's items share a worker (normbench.xdist_schedule)."""
    if config.getvalue("dist") != "load" or all(v == DEFAULT_VARIANT for v in config.option.variant or ()):
        return None
    from normbench.xdist_schedule import ImplementationScheduling

    scopes = {item.test_id: f"{item.impl.name}-{item.variant}" for item in _plan(config).items}
    return ImplementationScheduling(config, log, scopes)


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def _unjudged(config: pytest.Config, test_id: str, verdict: Verdict, summary: str) -> Outcome:
    item = _plan(config).by_id.get(test_id)
    if item is None:
        return Outcome.unplanned(test_id, verdict, summary)
    return _base_outcome(item, verdict, summary)


def complete_outcomes(config: pytest.Config, interrupted: bool) -> dict[str, Outcome]:
    """The run's outcomes with every planned item of every selected implementation accounted for
    (normbench.run_accounting.complete_outcomes)."""
    return run_accounting.complete_outcomes(
        config._normbench_outcomes, config._normbench_expected,  # type: ignore[attr-defined]
        _planned_implementations(config), config._normbench_crashed, interrupted,  # type: ignore[attr-defined]
        lambda test_id, verdict, summary: _unjudged(config, test_id, verdict, summary))


def _planned_implementations(config: pytest.Config) -> list[tuple[str, str]]:
    return [(item.test_id, item.impl.name) for item in _plan(config).items]


def _worker_killers(config: pytest.Config) -> dict[str, str]:
    """The implementations an xdist worker was judging when it was lost, each with the item it was on."""
    return run_accounting.worker_killers(config._normbench_crashed,  # type: ignore[attr-defined]
                                         dict(_planned_implementations(config)))


def rejudge_unreported(session: pytest.Session) -> list[str]:
    """Judge here, through this process's SandboxPool, every selected item that no worker reported (a worker
    killed by a plugin's process takes the items queued on it along, and once xdist has replaced
    --max-worker-restart workers it stops the run): a lost worker costs the implementation that killed it only.
    The implementations a lost worker was judging are not judged again (they would end this process too). Each
    item runs through pytest's own protocol (setup, known-failure marks, report hooks) without terminal output.
    Returns the test ids judged."""
    from _pytest.runner import runtestprotocol

    config = session.config
    plan = _plan(config)
    missing = set(config._normbench_expected) - set(config._normbench_outcomes)  # type: ignore[attr-defined]
    killers = _worker_killers(config)
    todo = [item.test_id for item in plan.items if item.test_id in missing and item.impl.name not in killers]
    if not todo:
        return []
    suite = ConformanceFile.from_parent(session, path=SUITE_DIR / "conformance.py")
    items = {item.name: item for item in suite.collect()}
    for test_id in todo:
        for report in runtestprotocol(items[test_id], log=False):
            if report.when in ("setup", "call"):
                _record_outcome(config, report)
    return todo


def implementation_summaries(config: pytest.Config, outcomes: Mapping[str, Outcome]) -> dict[str, dict[str, Any]]:
    """Per implementation, in the item groups of normbench.verdicts: planned = judged (a verdict) + skipped (with
    the reason) + errors (no verdict) + unjudged; failed and known (declared known failures) are of the judged."""
    plan = _plan(config)
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes.values():
        if o.key is not None:
            per[o.key.implementation].append(o.to_record())  # Counts reads records
    summaries = {}
    for name, items in per.items():
        impl = plan.registry.implementations.get(name)
        c = Counts.of(items)
        summaries[name] = {
            "family": impl.family if impl else None, "source": impl.source if impl else None,
            "planned": c.planned, "judged": c.judged, "skipped": c.skipped, "errors": c.errors,
            "unjudged": c.unjudged, "failed": c.failed, "known": c.known,
            **(_rejudge_fields(config, impl) if impl else {}),
        }
    return summaries


def _rejudge_fields(config: pytest.Config, impl: Any) -> dict[str, Any]:
    """What `normbench repro` needs to judge an item of `impl` again, beyond its outcome: how to import its plugin
    (a relative --impl-path made absolute), the hypothesis profile, and the spec file of a --spec-dir family."""
    from normbench.rejudge import plugin_entry
    from normbench.sandbox import SandboxedFactory
    from normbench.spec import builtin_spec_paths

    fields: dict[str, Any] = {"profile": config.option.profile}
    if isinstance(impl.factory, SandboxedFactory):
        fields["plugin"] = plugin_entry(impl.factory.source, config.invocation_params.dir)
    spec = _plan(config).specs.get(impl.family)
    if spec is not None and Path(spec.path).resolve() not in {p.resolve() for p in builtin_spec_paths()}:
        fields["spec_file"] = str(Path(spec.path).resolve())
    return fields


def import_change_lines(outcomes: Iterable[Mapping[str, Any]], width: int) -> list[str]:
    """One block per implementation whose import changed torch (normbench.judge_guard.import_changes): what it
    changed, wrapped to `width`."""
    found: dict[str, dict[str, None]] = defaultdict(dict)
    for o in outcomes:
        metrics = o.get("metrics")
        changes = metrics.get(IMPORT_CHANGES) if isinstance(metrics, dict) else None
        if o.get("implementation") and isinstance(changes, list):
            found[str(o["implementation"])].update(dict.fromkeys(map(str, changes)))
    lines = []
    for name in sorted(found):
        lines += textwrap.wrap(f"{name}: its import changed torch (its items were judged with this in place): "
                               + "; ".join(found[name]), max(60, width), subsequent_indent="    ")
    return lines


def _end_plugin_processes(config: pytest.Config) -> None:
    """Before anything is written: this process's judging children stopped, and every process a plugin started
    that is still alive killed (normbench.strays), so none can write after the parent reads and seals."""
    pool = getattr(config, "_normbench_pool", None)
    if pool is not None:
        pool.close()
    from normbench.strays import end_plugin_processes

    end_plugin_processes()


# trylast: under xdist the workers are shut down (DSession's sessionfinish) before this runs
@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldstop or session.shouldfail)
    if _is_controller(config) and config._normbench_outcomes and not interrupted:  # type: ignore[attr-defined]
        config._normbench_rejudged = rejudge_unreported(session)  # type: ignore[attr-defined]
    if _collects_conformance(config):
        _end_plugin_processes(config)
    if not _is_controller(config) or not config._normbench_outcomes:  # type: ignore[attr-defined]
        return
    not_run = set(config._normbench_expected) - set(config._normbench_outcomes)  # type: ignore[attr-defined]
    outcomes = complete_outcomes(config, interrupted)
    # Serialized here, once: the store and the publishers (the terminal summary, the matrix) take records.
    records = {test_id: o.to_record() for test_id, o in outcomes.items()}
    config._normbench_final = records  # type: ignore[attr-defined]
    judged_files = getattr(config, "_normbench_judged_files", None)
    if judged_files is not None:
        from normbench.integrity import changes, digest

        roots, before = judged_files
        changed = changes(before, digest(roots))
        if changed:
            # The references, specs or known failures moved under the run: no verdict of it can be trusted.
            config._normbench_tampered = changed  # type: ignore[attr-defined]
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
    if config.option.no_record:
        return
    results_dir = _results_dir(config)
    # The record replaces, under the store's lock, the (implementation, variant) units this run judged, and keeps
    # every other unit stored (the eager outcomes after a --variant compile run): the run never reads the store.
    # An interrupted run (-x, --maxfail, ^C) names the items it never ran: the store keeps their stored outcomes,
    # marked stale, instead of its errors.
    record = conformance_record([records[tid] for tid, o in outcomes.items() if o.key is not None],
                                profile=config.option.profile,
                                implementations=implementation_summaries(config, outcomes),
                                units=_judged_units(config, records),
                                not_reached=not_run if interrupted else ())
    record["errors"] = {tid: o.summary for tid, o in outcomes.items()
                        if tid.startswith(CONFIGURATION_PREFIXES) and o.verdict == Verdict.ERROR}
    record["unavailable"] = {tid: o.summary for tid, o in outcomes.items() if tid.startswith("plugin_unavailable")}
    from normbench.store.seal import new_key

    key = getattr(config, "_normbench_run_key", None) or new_key()
    try:
        path = store_conformance(results_dir, record, key=key)
    except (ResultsError, OSError) as exc:  # the verdicts must survive a results folder that failed under us
        config._normbench_write_error = f"{exc}"  # type: ignore[attr-defined]
        config._normbench_written = write_fallback(record)  # type: ignore[attr-defined]
        return
    config._normbench_written = path  # type: ignore[attr-defined]
    from normbench.publish import write_leaderboard

    try:
        # the leaderboard reads this run's record back: refused, naming the file, unless it is what was sealed
        write_leaderboard(results_dir, sealed={path: key})
    except ForgedRecord as exc:
        config._normbench_forged = exc.problems  # type: ignore[attr-defined]
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _judged_units(config: pytest.Config, records: Mapping[str, dict[str, Any]]) -> set[tuple[str, str]]:
    """The (implementation, variant) units this run judged: every variant of its plan, for each implementation
    with an outcome (one whose items a variant's plan leaves out has that unit judged empty)."""
    variants = {item.variant for item in _plan(config).items}
    judged = {str(o["implementation"]) for o in records.values() if o.get("implementation")}
    # and the unit of every outcome: one with no planned item (a CUDA-only plugin on a CPU machine is one explained
    # skip) is still this run's to replace
    own = {unit for unit in map(unit_of, records.values()) if unit is not None}
    return {(name, variant) for name in judged for variant in variants} | own


def _results_dir(config: pytest.Config) -> Path:
    """--results-dir, else ./normbench-results in the folder pytest was started from: never the committed results/
    of a clone (that is refreshed only by publishing, see docs/results.md)."""
    return Path(config.option.results_dir or config.invocation_params.dir / DEFAULT_RESULTS_DIR)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _is_controller(config):
        return
    outcomes = getattr(config, "_normbench_final", None)
    if not outcomes:
        return
    from normbench.board.conformance import conformance_matrix_text

    # Under xdist the controller collects nothing, so it builds the plan here to know every planned id.
    plan = _plan(config)
    planned = [((item.spec.family, item.impl.name, item.test_id), item.variant) for item in plan.items]

    def full_variant_plan(variant: str) -> list[tuple[str, str, str]]:
        # A deployment variant's bounded plan leaves items out (a float16 export of constant_rows)
        return [(i.spec.family, i.impl.name, i.test_id) for i in build_plan(
            plan.specs, plan.registry, config.option.impl, plan.devices, [variant], full_variant_plan=True)]

    bounded = config.option.variant_plan != "full"
    for entry in stale_entries(plan.known, planned, outcomes, DEFAULT_VARIANT, VARIANTS,
                               full_variant_plan if bounded else None):
        terminalreporter.write_line(f"stale known failure (no planned item, or every item run passed): {entry}",
                                    yellow=True)
    for kf in files_for_missing_implementations(plan.known, plan.registry.implementations,
                                                config.option.known_failures):
        terminalreporter.write_line(f"known failures for an implementation that is not installed: {kf.path} "
                                    f"(implementation: {kf.implementation!r})", yellow=True)
    width = terminalreporter._tw.fullwidth
    if config.option.matrix or config.option.verbose > 0:
        terminalreporter.section("normbench conformance matrix")
        terminalreporter.write_line(conformance_matrix_text(list(outcomes.values())))
    terminalreporter.section("normbench summary")
    for line in summary_lines(outcomes.values(), width):
        terminalreporter.write_line(line, red=WORDS[NOT_CONFORMING] in line)
    changed = import_change_lines(outcomes.values(), width - 2)
    if changed:
        terminalreporter.write_line("import-time changes (a finding, not a verdict: see metrics.import_time_changes):")
        for line in changed:
            terminalreporter.write_line("  " + line, yellow=True)
    terminalreporter.write_line(totals_line(outcomes.values()))
    # --no-record writes nothing at all, not even the matrix; nor does a run whose judged files changed
    if not config.option.no_record and not getattr(config, "_normbench_tampered", None):
        try:
            matrix = write_matrix(outcomes.values(), _results_dir(config) / "conformance-matrix.txt")
            terminalreporter.write_line(f"full matrix: {matrix} (or run with --matrix / -v)")
        except OSError as exc:
            terminalreporter.write_line(f"could not write the full matrix: {exc}", yellow=True)
    rejudged = getattr(config, "_normbench_rejudged", None)
    if rejudged:
        terminalreporter.write_line(f"judged {plural(len(rejudged), 'item')} in the controller that a lost xdist "
                                    "worker never reported", yellow=True)
    for problem in getattr(config, "_normbench_forged", None) or ():
        terminalreporter.write_line(f"refused a record: {problem}", red=True)
    tampered = getattr(config, "_normbench_tampered", None)
    if tampered:
        shown = "; ".join(tampered[:5]) + (f" (and {len(tampered) - 5} more)" if len(tampered) > 5 else "")
        terminalreporter.write_line(f"refused to write this run's records: files normbench reads changed during the "
                                    f"run, so no verdict of it can be trusted: {shown}", red=True)
    error = getattr(config, "_normbench_write_error", None)
    written = getattr(config, "_normbench_written", None)
    if error:
        terminalreporter.write_line(f"could not write the results ({error}); every verdict was saved to {written} "
                                    f"(store it later: normbench merge {written} --into {_results_dir(config)})",
                                    red=True)
    elif written:
        terminalreporter.write_line(f"results written to {written}")
