"""`normbench repro` for checks outside the torch-only script's set: the script it writes imports the plugin the way
the run was given it (a file by path, a module, an entry point by group and name), re-judges the item with
normbench's own code, and exits 1 only when the failure reproduces, 0 when the implementation now passes, 2 when it
cannot run (a broken import is never 'reproduced'). Each script runs in a fresh interpreter, in a temp folder
outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from normbench.checks.base import CHECKS
from normbench.cli.main import main
from normbench.cli.repro import offers_repro, repro_command
from normbench.registry import ENTRY_POINT_GROUP, Registry, _resolve, load_path, with_source
from normbench.rejudge import plugin_entry, plugin_from_label
from normbench.runner import build_plan, judge
from normbench.spec import load_specs
from normbench.store.records import conformance_record
from normbench.store.write import store_conformance

ROOT = Path(__file__).resolve().parent.parent
#: an invariance check (a LayerNorm that subtracts half the mean is not shift invariant) and a calling-context one
#: (a LayerNorm that returns its cached output for the same tensor misses an in-place update of it)
ITEMS = {"plug.half_centred": "layernorm[plug.half_centred-shift_invariance-float32]",
         "plug.cached": "layernorm[plug.cached-no_stale_output-float32]"}

BROKEN = '''
import torch
from torch import nn

from normbench import Implementation


class HalfCentred(nn.LayerNorm):
    """Subtracts half the mean (the bug): f(x + c) moves with c."""

    def forward(self, x):
        var = x.var(-1, unbiased=False, keepdim=True)
        y = (x - 0.5 * x.mean(-1, keepdim=True)) / torch.sqrt(var + self.eps)
        return y * self.weight + self.bias if self.weight is not None else y


class Cached(nn.LayerNorm):
    """Returns the output of its last call for the same tensor (the bug): an in-place update of x is missed."""

    def forward(self, x):
        key = (x.data_ptr(), tuple(x.shape))
        if getattr(self, "_key", None) != key:
            self._key, self._out = key, super().forward(x)
        return self._out
'''

FIXED = '''
from torch import nn

from normbench import Implementation


class HalfCentred(nn.LayerNorm):
    """Fixed: torch's LayerNorm."""


class Cached(nn.LayerNorm):
    """Fixed: no cache."""
'''

DECLARE = '''

def _build(cls):
    return lambda num_features, eps, affine: cls(num_features, eps=eps, elementwise_affine=affine)


def implementations():
    return [Implementation(name="plug.half_centred", family="layernorm", factory=_build(HalfCentred)),
            Implementation(name="plug.cached", family="layernorm", factory=_build(Cached))]
'''


def write_plugin(path: Path, body: str) -> None:
    path.write_text(body + DECLARE, encoding="utf-8")


def record(results: Path, found: Any, source: str, plugin: dict[str, str],
           items: tuple[str, ...] = tuple(ITEMS.values())) -> None:
    """Judge the plugin's `items` in this process (normbench.runner.judge, as the suite's judging processes do)
    and store the record as the suite does, with the `plugin` entry the suite writes."""
    specs = load_specs(known_checks=CHECKS).specs
    registry = Registry()
    for impl in _resolve(found, source):
        registry.add(with_source(impl, source))
    outcomes, summaries = [], {}
    for item in build_plan(specs, registry, list(ITEMS)):
        if item.test_id in items:
            outcome = {**judge(item).to_record(), "source": source}
            assert outcome["verdict"] == "fail", outcome["summary"]  # the plugin is broken as intended
            outcomes.append(outcome)
            summaries[item.impl.name] = {"family": "layernorm", "source": source, "planned": 1, "judged": 1,
                                         "unjudged": 0, "plugin": plugin, "profile": "ci"}
    assert len(outcomes) == len(items)
    store_conformance(results, conformance_record(outcomes, profile="ci", implementations=summaries))


def write_script(results: Path, item: str, out: Path, *options: str) -> Path:
    assert main(["repro", item, "--results-dir", str(results), "-o", str(out), *options]) == 0
    return out


def run_script(script: Path, cwd: Path, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in a folder outside the repository, normbench as installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_XDIST_WORKER")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    assert ROOT not in folder.resolve().parents
    return folder


def assert_status(proc: subprocess.CompletedProcess[str], status: int, word: str) -> None:
    assert proc.returncode == status and word in proc.stdout, proc.stdout + proc.stderr


def scripts(results: Path, tmp_path: Path) -> dict[str, Path]:
    return {name: write_script(results, item, tmp_path / f"repro_{name.split('.')[-1]}.py")
            for name, item in ITEMS.items()}


@pytest.mark.slow
def test_file_path_plugin(tmp_path):
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    plugin = plugin_dir / "my_plugin.py"
    write_plugin(plugin, BROKEN)
    spec = f"{plugin}:implementations"
    results = tmp_path / "results"
    record(results, load_path(spec), f"--impl-path {spec}", plugin_entry(("path", spec), tmp_path))
    written = scripts(results, tmp_path)
    for script in written.values():
        text = script.read_text()
        assert "spec_from_file_location" in text and "import_module(" not in text
        assert "re-judges" in text.lower() and "normbench.rejudge" in text
    where = outside(tmp_path)
    for name, script in written.items():
        proc = run_script(script, where)
        assert_status(proc, 1, "REPRODUCED")
        assert "tol_ratio = error / bound" in proc.stdout or name == "plug.cached"  # the deviation, printed
    write_plugin(plugin, FIXED)
    for script in written.values():
        assert_status(run_script(script, where), 0, "NOT REPRODUCED")
    plugin.write_text("raise ImportError('a dependency is missing')\n")
    for script in written.values():
        proc = run_script(script, where)
        assert_status(proc, 2, "CANNOT RUN")
        assert "a dependency is missing" in proc.stdout and "REPRODUCED" not in proc.stdout
    plugin.unlink()
    assert_status(run_script(written["plug.cached"], where), 2, "CANNOT RUN")


@pytest.mark.slow
def test_the_torch_only_script_imports_a_file_plugin_by_path(tmp_path, capsys):
    """A plugin's forward_equivalence item is re-judged by default; --standalone writes the torch-only script, which
    imports a file plugin by location too, and a plugin that no longer imports is 2, not 1."""
    plugin = tmp_path / "my_plugin.py"
    write_plugin(plugin, BROKEN)
    spec = f"{plugin}:implementations"
    item = "layernorm[plug.half_centred-forward_equivalence-float32]"
    record(tmp_path / "results", load_path(spec), f"--impl-path {spec}", plugin_entry(("path", spec), tmp_path),
           (item,))
    assert "normbench.rejudge" in write_script(tmp_path / "results", item, tmp_path / "auto.py").read_text()
    script = write_script(tmp_path / "results", item, tmp_path / "repro.py", "--standalone")
    text = script.read_text()
    assert "spec_from_file_location" in text and "import_module(" not in text and "normbench.rejudge" not in text
    where = outside(tmp_path)
    assert_status(run_script(script, where), 1, "REPRODUCED")
    write_plugin(plugin, FIXED)
    assert_status(run_script(script, where), 0, "NOT REPRODUCED")
    plugin.write_text("import not_installed_anywhere\n")
    proc = run_script(script, where)
    assert_status(proc, 2, "CANNOT RUN")
    assert "not_installed_anywhere" in proc.stdout and "REPRODUCED" not in proc.stdout
    # a declaration the torch-only script does not restate is said, never judged wrongly
    write_plugin(plugin, BROKEN.replace("from normbench import Implementation", "from normbench import Implementation"
                                        "\nimport functools\nImplementation = functools.partial(Implementation, "
                                        "param_dtype='float32')"))
    proc = run_script(script, where)
    assert_status(proc, 2, "CANNOT RUN")
    assert "param_dtype='float32'" in proc.stdout and "--with-normbench" in proc.stdout
    # outside the checks it covers, --standalone is refused with the reason
    assert main(["repro", "batchnorm[torch.nn.BatchNorm1d-constant_rows-train-float16]", "--results-dir",
                 str(ROOT / "results"), "--standalone"]) == 2
    assert "no torch-only script for family 'batchnorm', check 'constant_rows'" in capsys.readouterr().err


@pytest.mark.slow
def test_module_plugin(tmp_path, monkeypatch):
    package = tmp_path / "pkgs" / "nb_repro_mod_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_plugin(package / "norms.py", BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    spec = "nb_repro_mod_plugin.norms:implementations"
    try:
        record(tmp_path / "results", load_path(spec), f"--impl-path {spec}", plugin_entry(("path", spec), tmp_path))
    finally:
        for name in [m for m in sys.modules if m.startswith("nb_repro_mod_plugin")]:
            del sys.modules[name]
    script = write_script(tmp_path / "results", ITEMS["plug.half_centred"], tmp_path / "repro.py")
    assert "importlib.import_module(module_name)" in script.read_text()
    where, path = outside(tmp_path), str(tmp_path / "pkgs")
    assert_status(run_script(script, where, pythonpath=path), 1, "REPRODUCED")
    write_plugin(package / "norms.py", FIXED)
    assert_status(run_script(script, where, pythonpath=path), 0, "NOT REPRODUCED")
    # not importable where it runs: an explained 2, with what to do
    proc = run_script(script, where)
    assert_status(proc, 2, "CANNOT RUN")
    assert "ModuleNotFoundError" in proc.stdout and "PYTHONPATH" in proc.stdout


@pytest.mark.slow
def test_entry_point_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "nb_repro_ep_plugin").mkdir(parents=True)
    (site / "nb_repro_ep_plugin" / "__init__.py").write_text("")
    write_plugin(site / "nb_repro_ep_plugin" / "norms.py", BROKEN)
    dist = site / "nb_repro_ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nb-repro-ep-plugin\nVersion: 1.0\n")
    value = "nb_repro_ep_plugin.norms:implementations"
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nnb-repro = {value}\n")
    monkeypatch.syspath_prepend(str(site))
    from importlib.metadata import entry_points

    (ep,) = entry_points(group=ENTRY_POINT_GROUP, name="nb-repro")
    source = f"entry point 'nb-repro' ({value})"
    assert plugin_from_label(source) == plugin_entry(("entry_point", "nb-repro", value), tmp_path)
    try:
        record(tmp_path / "results", ep.load(), source, plugin_entry(("entry_point", "nb-repro", value), tmp_path))
    finally:
        for name in [m for m in sys.modules if m.startswith("nb_repro_ep_plugin")]:
            del sys.modules[name]
    script = write_script(tmp_path / "results", ITEMS["plug.cached"], tmp_path / "repro.py")
    assert "entry_points(group=group, name=name)" in script.read_text()
    where = outside(tmp_path)
    assert_status(run_script(script, where, pythonpath=str(site)), 1, "REPRODUCED")
    write_plugin(site / "nb_repro_ep_plugin" / "norms.py", FIXED)
    assert_status(run_script(script, where, pythonpath=str(site)), 0, "NOT REPRODUCED")
    # the distribution is not installed where it runs
    proc = run_script(script, where)
    assert_status(proc, 2, "CANNOT RUN")
    assert "no entry point 'nb-repro'" in proc.stdout


def test_an_item_the_plugin_no_longer_provides_cannot_run(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    write_plugin(plugin, BROKEN)
    spec = f"{plugin}:implementations"
    record(tmp_path / "results", load_path(spec), f"--impl-path {spec}", plugin_entry(("path", spec), tmp_path))
    script = write_script(tmp_path / "results", ITEMS["plug.cached"], tmp_path / "repro.py")
    plugin.write_text(BROKEN + DECLARE.replace('"plug.cached"', '"plug.renamed"'))
    proc = run_script(script, outside(tmp_path))
    assert_status(proc, 2, "CANNOT RUN")
    assert "no longer provides an implementation named 'plug.cached'" in proc.stdout


def test_without_normbench_the_script_cannot_run(tmp_path):
    """normbench missing where the script runs: 2 with the reason, not a traceback's 1."""
    plugin = tmp_path / "my_plugin.py"
    write_plugin(plugin, BROKEN)
    spec = f"{plugin}:implementations"
    record(tmp_path / "results", load_path(spec), f"--impl-path {spec}", plugin_entry(("path", spec), tmp_path))
    script = write_script(tmp_path / "results", ITEMS["plug.half_centred"], tmp_path / "repro.py")
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "normbench":
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, Block())
    """))
    proc = run_script(script, outside(tmp_path), pythonpath=str(blocker))
    assert_status(proc, 2, "CANNOT RUN")
    assert "normbench is not importable" in proc.stdout


def test_a_relative_file_plugin_is_recorded_by_its_absolute_path(tmp_path):
    """A relative --impl-path is relative to the folder the run started in; the record's plugin entry is absolute,
    so the script runs from anywhere (the source label keeps what the user typed)."""
    assert plugin_entry(("path", "sub/my_plugin.py:impls"), tmp_path) == {
        "kind": "file", "path": str((tmp_path / "sub" / "my_plugin.py").resolve()), "attr": "impls"}
    assert plugin_entry(("path", "pkg.mod:impls"), tmp_path) == {"kind": "module", "module": "pkg.mod",
                                                                  "attr": "impls"}


@pytest.mark.slow
def test_the_suite_records_how_to_import_the_plugin_and_its_failure_text_ends_with_repro(tmp_path):
    """End to end: `pytest --pyargs normbench.suite --impl-path /path/my_plugin.py:implementations` from the plugin's
    folder records the plugin entry and the profile; the failure text ends with the repro command, whose script,
    run elsewhere, reproduces the failure."""
    work = tmp_path / "plugin_repo"
    work.mkdir()
    write_plugin(work / "my_plugin.py", BROKEN)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_XDIST_WORKER")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "normbench.suite", "-p", "no:cacheprovider",
                           "-q", "--no-entry-points", "--impl-path", f"{work / 'my_plugin.py'}:implementations",
                           "--impl", "plug.half_centred", "-k", "shift_invariance-float32"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    item = ITEMS["plug.half_centred"]
    assert f"reproduce: {repro_command(item)} -o repro.py && python repro.py" in proc.stdout, proc.stdout[-3000:]
    results = work / "normbench-results"
    (path,) = (results / "raw").glob("*/conformance.json")
    entry = json.loads(path.read_text())["implementations"]["plug.half_centred"]
    assert entry["plugin"] == {"kind": "file", "path": str((work / "my_plugin.py").resolve()),
                               "attr": "implementations"}
    assert entry["profile"] == "ci"
    script = write_script(results, item, tmp_path / "repro.py")
    assert_status(run_script(script, outside(tmp_path)), 1, "REPRODUCED")


def test_an_older_record_without_the_plugin_entry_is_read_from_its_source_label():
    assert plugin_from_label("--impl-path pkg.mod:impls") == {"kind": "module", "module": "pkg.mod", "attr": "impls"}
    assert plugin_from_label("--impl-path /a/b/p.py:impls") == {"kind": "file", "path": "/a/b/p.py", "attr": "impls"}
    assert plugin_from_label("entry point 'x' (pkg.mod:fn)") == {"kind": "entry_point", "group": ENTRY_POINT_GROUP,
                                                                 "name": "x", "value": "pkg.mod:fn"}
    assert plugin_from_label("somewhere else") is None


@pytest.mark.parametrize(("verdict", "offered"), [("fail", True), ("xfail", True), ("error", False),
                                                  ("pass", False), ("unjudged", False)])
def test_repro_is_offered_for_every_measured_failure_only(verdict, offered):
    assert offers_repro({"verdict": verdict, "implementation": "x", "check": "shift_invariance"}) is offered


def test_the_site_offers_repro_where_it_works(tmp_path):
    from factories.records import outcome

    from normbench.board.build import build_leaderboard
    from normbench.publish.site import SitePublisher, implementation_page

    failing = outcome("plug.x", "shift_invariance", "fail", tol_ratio=3.0)
    crashed = outcome("plug.x", "no_stale_output", "error")
    crashed["summary"] = "implementation 'plug.x' raised RuntimeError: boom"
    board = build_leaderboard([conformance_record([failing, crashed], profile="ci")])
    pages = SitePublisher().render(board, tmp_path / "results")
    page = pages[implementation_page("plug.x")]
    assert page.count("Reproduce:") == 1
    assert f"normbench repro &#39;{failing['test_id']}&#39; --results-dir results" in page


def test_the_failure_text_names_the_results_folder_or_says_nothing_was_recorded():
    from types import SimpleNamespace

    from normbench.pytest_plugin import _repro_line

    config = SimpleNamespace(option=SimpleNamespace(no_record=False, results_dir="my results"))
    assert _repro_line(config, "x[y]") == ("\n  reproduce: normbench repro 'x[y]' --results-dir 'my results' "
                                           "-o repro.py && python repro.py")
    config.option.no_record = True
    line = _repro_line(config, "x[y]")
    assert "records nothing (--no-record); run again without it, then normbench repro 'x[y]'" in line


def test_a_spec_dir_family_is_rebuilt_from_its_recorded_spec_file(tmp_path):
    from normbench.rejudge import CannotRejudge, _spec
    from normbench.spec import builtin_spec_paths

    text = next(p for p in builtin_spec_paths() if p.name == "layernorm.yaml").read_text()
    spec_file = tmp_path / "mynorm.yaml"
    spec_file.write_text(text.replace("family: layernorm", "family: mynorm", 1))
    assert _spec({"family": "mynorm", "spec_file": str(spec_file)}).family == "mynorm"
    with pytest.raises(CannotRejudge, match="defines family 'mynorm', not 'othernorm'"):
        _spec({"family": "othernorm", "spec_file": str(spec_file)})
    with pytest.raises(CannotRejudge, match="no spec of family 'mynorm'"):
        _spec({"family": "mynorm"})  # no spec file recorded: the shipped specs only
    spec_file.unlink()
    with pytest.raises(CannotRejudge, match="cannot be loaded"):
        _spec({"family": "mynorm", "spec_file": str(spec_file)})
