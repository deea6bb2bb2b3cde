"""pytest integration: `pytest suite` turns the plan into test items, records outcomes, prints the matrix.

Loaded by the repository's root conftest.py. Items are collected from suite/conformance.py by a hook
(that file is not a test module: its name does not match test_*.py), one item per plan entry, named with
the stable test id, e.g. ``layernorm[torch.nn.LayerNorm-shift_invariance-float32]``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from normbench.checks.base import CHECKS, PROFILES
from normbench.known_failures import KnownFailures, load_known_failures
from normbench.registry import discover
from normbench.results import conformance_record, write_conformance
from normbench.runner import Outcome, PlanItem, build_plan, judge
from normbench.spec import load_specs

STASH_KEY = "normbench_outcome"


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
                    help="where results are written (default: results/ under the rootdir)")
    group.addoption("--no-record", action="store_true", help="do not write results or the leaderboard")
    group.addoption("--known-failures", action="append", default=[], metavar="PATH",
                    help="extra known-failures YAML file or directory (repeatable)")
    group.addoption("--check-timeout", type=float, default=120.0, metavar="SECONDS",
                    help="time limit per item, so a hanging implementation fails alone (default 120)")
    group.addoption("--device", action="append", default=[], choices=["cpu", "cuda"],
                    help="devices to judge on (default: cpu, plus cuda where available)")


class Plan:
    """Everything collection needs, computed once per process."""

    def __init__(self, config: pytest.Config) -> None:
        opt = config.option
        specs = load_specs(opt.spec_dir, known_checks=CHECKS)
        self.spec_errors = specs.errors
        self.registry = discover(opt.impl_path, families=specs.specs,
                                 include_entry_points=not opt.no_entry_points)
        unknown = sorted(set(opt.impl) - set(self.registry.implementations))
        self.unknown_impls = unknown
        devices = opt.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
        self.items = build_plan(specs.specs, self.registry, opt.impl, devices)
        root = Path(str(config.rootpath))
        sources = [root / "suite" / "known_failures", *map(Path, opt.known_failures)]
        self.known: KnownFailures = load_known_failures(sources)


def _plan(config: pytest.Config) -> Plan:
    plan = getattr(config, "_normbench_plan", None)
    if plan is None:
        plan = Plan(config)
        config._normbench_plan = plan  # type: ignore[attr-defined]
    return plan


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "normbench: a conformance item")
    # One thread per process: deterministic, and xdist workers do not fight over the two cores.
    torch.set_num_threads(1)
    config._normbench_outcomes = {}  # type: ignore[attr-defined]


class ConfigurationItem(pytest.Item):
    """A spec or plugin that could not be loaded: one failing item with a clear message."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def runtest(self) -> None:
        raise ConformanceFailure(self.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, self.name


class ConformanceFailure(AssertionError):
    pass


class ConformanceItem(pytest.Item):
    def __init__(self, *, plan_item: PlanItem, profile: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_item = plan_item
        self.profile = profile

    def runtest(self) -> None:
        outcome = judge(self.plan_item, self.profile)
        self.user_properties.append((STASH_KEY, outcome.as_dict()))
        if outcome.verdict == "skip":
            pytest.skip(outcome.summary)
        if outcome.verdict in ("fail", "error"):
            raise ConformanceFailure(f"[{outcome.verdict}] {outcome.summary}" + _counterexample(outcome))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int, str]:
        return str(self.path), 0, self.name


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
        for name in plan.unknown_impls:
            items.append(ConfigurationItem.from_parent(
                self, name=f"unknown_impl[{name}]",
                message=f"--impl {name!r} matches no implementation; known: "
                        f"{sorted(plan.registry.implementations)}"))
        profile = self.config.option.profile
        timeout = self.config.option.check_timeout
        for plan_item in plan.items:
            item = ConformanceItem.from_parent(self, name=plan_item.test_id, plan_item=plan_item,
                                               profile=profile)
            item.add_marker(pytest.mark.normbench)
            item.add_marker(pytest.mark.timeout(plan_item.prop.timeout or timeout, method="signal"))
            reason = plan.known.reason_for(plan_item.test_id)
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
            items.append(item)
        return items


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == "conformance.py" and file_path.parent.name == "suite":
        return ConformanceFile.from_parent(parent, path=file_path)
    return None


def _record_outcome(config: pytest.Config, report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    data = props.get(STASH_KEY)
    test_id = report.nodeid.split("::")[-1]
    outcomes: dict[str, dict[str, Any]] = config._normbench_outcomes  # type: ignore[attr-defined]
    if data is None:
        is_conformance = report.nodeid.split("::")[0].endswith("conformance.py")
        if is_conformance and (report.when == "call" or (report.when == "setup" and report.outcome != "passed")):
            if not test_id.startswith(("spec_error", "plugin_error", "unknown_impl")):
                # killed by the time limit or crashed before judging: still an outcome for this item
                outcomes[test_id] = {"test_id": test_id, "verdict": "error",
                                     "summary": str(report.longrepr)[-2000:]}
        return
    data = dict(data)
    if hasattr(report, "wasxfail"):
        data["verdict"] = "xfail" if report.outcome == "skipped" else data["verdict"]
        data["known_failure"] = report.wasxfail
    outcomes[test_id] = data


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _current_config
    if config is not None and report.when in ("setup", "call"):
        _record_outcome(config, report)


_current_config: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _current_config
    _current_config = session.config


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _is_controller(config):
        return
    outcomes = config._normbench_outcomes  # type: ignore[attr-defined]
    if not outcomes or config.option.no_record:
        return
    results_dir = Path(config.option.results_dir or Path(str(config.rootpath)) / "results")
    record = conformance_record(list(outcomes.values()), profile=config.option.profile)
    path = write_conformance(results_dir, record)
    config._normbench_written = path  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _is_controller(config):
        return
    outcomes = config._normbench_outcomes  # type: ignore[attr-defined]
    if not outcomes:
        return
    from normbench.leaderboard import conformance_matrix_text

    # Under xdist the controller collects nothing, so it builds the plan here to know every planned id.
    plan = _plan(config)
    planned = ((item.spec.family, item.impl.name, item.test_id) for item in plan.items)
    for entry in plan.known.stale(outcomes, planned):
        terminalreporter.write_line(f"stale known failure (no planned item, or every item run passed): {entry}",
                                    yellow=True)
    terminalreporter.section("normbench conformance matrix")
    terminalreporter.write_line(conformance_matrix_text(list(outcomes.values())))
    written = getattr(config, "_normbench_written", None)
    if written:
        terminalreporter.write_line(f"results written to {written}")
