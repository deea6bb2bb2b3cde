"""`normbench repro ITEM_ID`: the torch-only script it writes reproduces the recorded error with plain python, without
normbench, on the committed torch LayerNorm bf16 dγ/dβ known failure and on plugins broken on purpose; a correct
implementation run on the same counterexample is not flagged; an item outside the torch-only set gets the script that
re-judges it with normbench (tests/test_repro_rejudge.py); unknown or passing items are refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from normbench.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
ITEM = "layernorm[torch.nn.LayerNorm-weight_gradient_reduction-bfloat16]"
MUTANT_ITEMS = ("layernorm[repro.eps_outside_layernorm-forward_equivalence-float32]",
                "layernorm[repro.eps_outside_layernorm-gradient_equivalence-bfloat16]",
                "rmsnorm[repro.eps_outside_rmsnorm-forward_equivalence-float32]",
                "rmsnorm[repro.eps_outside_rmsnorm-gradient_equivalence-bfloat16]")
LINE = re.compile(r"^(FAIL|ok  ) (\w+): max abs err (\S+), max rel \S+, \S+ ulp, (\S+)x tolerance", re.M)


def write_script(tmp_path: Path, item: str, results: Path, *options: str) -> Path:
    script = tmp_path / "repro_item.py"
    assert main(["repro", item, "--results-dir", str(results), "-o", str(script), *options]) == 0
    return script


def run_script(script: Path, pythonpath: str = "", torch_only: bool = True) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the script's folder; with `torch_only`, normbench must not be imported along the way
    (a plugin imports it for its Implementation declarations). The guard exits 3, never 1 ('reproduced')."""
    guard = ("import os, runpy, sys\n"
             "try:\n"
             f"    runpy.run_path({str(script)!r}, run_name='__main__')\n"
             "finally:\n"
             f"    if {torch_only!r} and [m for m in sys.modules if m.split('.')[0] == 'normbench']:\n"
             "        print('normbench imported'); sys.stdout.flush(); os._exit(3)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-c", guard], cwd=script.parent, env=env, capture_output=True,
                          text=True, timeout=300)


def measured(stdout: str) -> dict[str, tuple[bool, float, float]]:
    return {m[2]: (m[1] == "FAIL", float(m[3]), float(m[4])) for m in LINE.finditer(stdout)}


def recorded(results: Path, item: str) -> dict[str, float]:
    for path in (results / "raw").glob("*/conformance.json"):
        outcomes = json.loads(path.read_text())["outcomes"]
        if item in outcomes:
            return outcomes[item]["metrics"]
    raise AssertionError(f"{item} not recorded under {results}")


def assert_reproduces(proc: subprocess.CompletedProcess[str], metrics: dict[str, float]) -> None:
    got = measured(proc.stdout)
    assert got, proc.stdout + proc.stderr
    failing = {name for name, (bad, _, _) in got.items() if bad}
    assert failing and proc.returncode == 1 and "REPRODUCED" in proc.stdout, proc.stdout + proc.stderr
    for name, (_, max_abs, ratio) in got.items():
        # printed to 6 significant digits: the same tensors, bit for bit, give the same numbers
        assert max_abs == pytest.approx(metrics[f"{name}.max_abs"], rel=1e-5), name
        assert ratio == pytest.approx(metrics[f"{name}.tol_ratio"], rel=1e-5), name


def test_torch_layernorm_bf16_weight_gradient_reduction_reproduces(tmp_path):
    script = write_script(tmp_path, ITEM, ROOT / "results")
    text = script.read_text()
    assert "torch.nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)" in text
    assert "import normbench" not in text and "from normbench" not in text
    proc = run_script(script)
    assert_reproduces(proc, recorded(ROOT / "results", ITEM))
    assert set(measured(proc.stdout)) == {"grad_weight", "grad_bias"}


@pytest.fixture(scope="module")
def mutant_results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q",
                           "--results-dir", str(results), "--impl-path", "plugins.repro_mutants:implementations",
                           "--impl", "repro.eps_outside_layernorm", "--impl", "repro.eps_outside_rmsnorm",
                           "-k", "forward_equivalence-float32 or gradient_equivalence-bfloat16"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    return results


@pytest.mark.slow
@pytest.mark.parametrize("item", MUTANT_ITEMS)
def test_plugin_items_reproduce_through_their_import(mutant_results, tmp_path, item):
    """A plugin's item gets the re-judging script by default; --standalone writes the torch-only one."""
    script = write_script(tmp_path, item, mutant_results, "--standalone")
    assert "module_name, attr = 'plugins.repro_mutants', 'implementations'" in script.read_text()
    proc = run_script(script, pythonpath=str(ROOT / "tests"), torch_only=False)
    assert_reproduces(proc, recorded(mutant_results, item))
    expected = {"forward_equivalence": {"output"}, "gradient_equivalence": {"grad_input", "grad_weight"}}
    check = item.split("-")[-2]
    assert expected[check] <= set(measured(proc.stdout))


@pytest.mark.slow
def test_a_correct_implementation_on_the_same_counterexample_is_not_flagged(mutant_results, tmp_path):
    """The script judges, it does not replay a verdict: the mutant's counterexample run on torch's LayerNorm passes."""
    path = next((mutant_results / "raw").glob("*/conformance.json"))
    record = json.loads(path.read_text())
    outcome = dict(record["outcomes"][MUTANT_ITEMS[1]])
    outcome.update(implementation="torch.nn.LayerNorm", test_id="layernorm[torch.nn.LayerNorm-gradient_equivalence-"
                   "bfloat16]", source="entry point 'torch-builtins' (normbench.builtins:torch_implementations)")
    record["outcomes"][outcome["test_id"]] = outcome
    path.write_text(json.dumps(record))
    proc = run_script(write_script(tmp_path, outcome["test_id"], mutant_results))
    assert proc.returncode == 0 and "NOT REPRODUCED" in proc.stdout, proc.stdout + proc.stderr
    assert not any(bad for bad, _, _ in measured(proc.stdout).values())


def test_outside_the_torch_only_set_the_script_rejudges_with_normbench(tmp_path):
    """A check and family the torch-only script does not cover: the script re-judges it with normbench, through the
    entry point the record names, and reproduces the committed known failure."""
    item = "batchnorm[torch.nn.BatchNorm1d-constant_rows-train-float16]"
    script = write_script(tmp_path, item, ROOT / "results")
    text = script.read_text()
    assert "from normbench.rejudge import main" in text and "entry_points(group=group, name=name)" in text
    proc = run_script(script, torch_only=False)
    assert proc.returncode == 1 and "REPRODUCED" in proc.stdout, proc.stdout + proc.stderr
    assert "output.tol_ratio = error / bound: inf (recorded inf)" in proc.stdout


def test_with_normbench_forces_the_rejudging_script(tmp_path, capsys):
    assert main(["repro", ITEM, "--results-dir", str(ROOT / "results"), "--with-normbench"]) == 0
    assert "from normbench.rejudge import main" in capsys.readouterr().out


def test_refusals_say_why(capsys):
    results = str(ROOT / "results")
    assert main(["repro", "layernorm[torch.nn.LayerNorm-weight_gradient_reduction-bfloat17]", "--results-dir",
                 results]) == 2
    assert f"did you mean {ITEM!r}" in capsys.readouterr().err
    assert main(["repro", "layernorm[torch.nn.LayerNorm-forward_equivalence-float32]", "--results-dir",
                 results]) == 2
    assert "did not fail in the records (verdict pass)" in capsys.readouterr().err


def test_missing_results_dir(tmp_path, capsys):
    assert main(["repro", ITEM, "--results-dir", str(tmp_path)]) == 2
    assert f"no records under {tmp_path / 'raw'}" in capsys.readouterr().err


def test_script_goes_to_stdout_without_output(capsys):
    assert main(["repro", ITEM, "--results-dir", str(ROOT / "results")]) == 0
    assert capsys.readouterr().out.startswith("#!/usr/bin/env python")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_script_inputs_equal_normbench_inputs_in_every_domain(dtype):
    """The script's make_input restates normbench.inputs.make_input for per-token layouts: same values, bit for
    bit, in every value domain (hypothesis counterexamples use several)."""
    import torch

    from normbench.cli.repro import DOMAIN_CODE, DOMAIN_FUNCTION
    from normbench.inputs import DOMAINS, Case, make_input
    from normbench.spec import builtin_spec_paths, load_spec

    layout = next(s for s in map(load_spec, builtin_spec_paths()) if s.family == "layernorm").layout
    assert set(DOMAIN_CODE) == set(DOMAINS)  # a new domain in normbench needs its line in the script
    for domain in DOMAINS:
        case = Case((3, 4, 8), domain, seed=1234, scale=10.0)
        namespace = {"torch": torch, "SHAPE": case.shape, "DOMAIN": domain, "SEED": case.seed, "SCALE": case.scale,
                     "DEVICE": "cpu"}
        exec(DOMAIN_FUNCTION, namespace)  # the script's own code, as the script runs it
        got = namespace["make_input"](getattr(torch, dtype))
        want = make_input(case, getattr(torch, dtype), "cpu", layout)
        assert torch.equal(got, want), domain
