"""tests/factories/xdist_groups: the tests that read one module-scoped run go to one xdist worker, so that run (a
whole `pytest suite` in a subprocess, in the slow tests) happens once per parameter instead of once per worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from factories.xdist_groups import WORKERINPUT_KEY, group_of, mark_groups, tell_worker, use_loadgroup

TESTS = Path(__file__).resolve().parent


def _item(nodeid: str, fixtures: dict[str, tuple[str, str]], params: dict[str, object] | None = None):
    defs = {name: [SimpleNamespace(scope=scope, baseid=baseid)] for name, (scope, baseid) in fixtures.items()}
    item = SimpleNamespace(nodeid=nodeid, _fixtureinfo=SimpleNamespace(name2fixturedefs=defs), marks=[])
    if params is not None:
        item.callspec = SimpleNamespace(params=params)
    item.add_marker = item.marks.append
    return item


MODULE = "tests/test_x.py"


def test_a_test_reading_its_modules_scoped_fixture_is_grouped_by_module():
    item = _item(f"{MODULE}::test_a", {"run": ("module", MODULE), "tmp_path": ("function", "")})
    assert group_of(item) == MODULE


def test_each_parameter_of_the_scoped_fixture_is_its_own_group():
    serial = _item(f"{MODULE}::test_a[serial]", {"run": ("module", MODULE)}, {"run": "serial"})
    xdist = _item(f"{MODULE}::test_a[xdist]", {"run": ("module", MODULE)}, {"run": "xdist"})
    assert group_of(serial) == f"{MODULE},run=serial" != group_of(xdist) == f"{MODULE},run=xdist"


def test_function_fixtures_and_shared_fixtures_defined_elsewhere_group_nothing():
    assert group_of(_item(f"{MODULE}::test_a", {"tmp_path": ("function", "")})) is None
    # pytest's own session fixtures and a conftest's are shared by every module: grouping by them would put the
    # whole run on one worker
    assert group_of(_item(f"{MODULE}::test_a", {"tmp_path_factory": ("session", ""),
                                                "cfg": ("session", "tests")})) is None


def test_a_group_name_keeps_clear_of_what_xdist_splits_on():
    item = _item(f"{MODULE}::test_a[x]", {"run": ("module", MODULE)}, {"run": "a[1]@b"})
    assert not set(group_of(item)) & set("[]@")


def test_in_a_grouping_workers_collection_only_grouped_tests_get_their_group_as_node_id_suffix():
    grouped = _item(f"{MODULE}::test_a[serial]", {"run": ("module", MODULE)}, {"run": "serial"})
    alone = _item(f"{MODULE}::test_b", {})
    mark_groups(SimpleNamespace(workerinput={WORKERINPUT_KEY: True}), [grouped, alone])
    assert grouped._nodeid == f"{MODULE}::test_a[serial]@{MODULE},run=serial"
    assert not hasattr(alone, "_nodeid") and grouped.marks == []  # no mark: `-k xdist` must not select it


@pytest.mark.parametrize("config", [SimpleNamespace(), SimpleNamespace(workerinput={WORKERINPUT_KEY: False}),
                                    SimpleNamespace(workerinput={})], ids=["controller", "not-grouping", "older"])
def test_outside_a_grouping_worker_no_node_id_changes(config):
    grouped = _item(f"{MODULE}::test_a", {"run": ("module", MODULE)})
    mark_groups(config, [grouped])
    assert not hasattr(grouped, "_nodeid")


@pytest.mark.parametrize(("given", "used"), [("load", "loadgroup"), ("loadscope", "loadscope"), ("no", "no"),
                                             ("worksteal", "worksteal")])
def test_the_controller_distributes_by_group_only_in_place_of_load(given, used):
    config = SimpleNamespace(option=SimpleNamespace(dist=given))
    use_loadgroup(config)
    assert config.option.dist == used


@pytest.mark.parametrize("controller", ["loadgroup", "loadscope"])
def test_a_worker_is_told_whether_its_controller_groups(controller):
    node = SimpleNamespace(workerinput={}, config=SimpleNamespace(getvalue=lambda name: controller))
    tell_worker(node)
    assert node.workerinput[WORKERINPUT_KEY] is (controller == "loadgroup")
    worker = SimpleNamespace(workerinput=node.workerinput, option=SimpleNamespace(dist="load"))
    use_loadgroup(worker)
    assert worker.option.dist == "load"  # a worker's own --dist is left alone


@pytest.mark.slow
def test_under_two_workers_each_parameter_of_a_module_run_is_set_up_once(tmp_path):
    log = tmp_path / "setups.log"
    env = {**os.environ, "XDIST_GROUP_PROBE_LOG": str(log)}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:randomly",
                           str(TESTS / "factories" / "xdist_group_probe.py")], cwd=TESTS.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "18 passed" in proc.stdout, proc.stdout[-3000:]
    # plain --dist load hands tests of each parameter to both workers (its first batches are 2 tests each), which
    # set the fixture up four times
    setups = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert setups == ["a", "b"], log.read_text()
