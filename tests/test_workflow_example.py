"""examples/ci/normbench.yml: its `run:` steps, run here with the same commands (GitHub's expressions and
variables substituted, a tmp dir as the workspace: the plugin's repository, with no normbench checkout; normbench is
the installed package) on torch.nn.RMSNorm's forward equivalence: the summary is written, the gate passes against a
baseline of the same code and fails when an item of the baseline disappeared."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "normbench.yml"
ARGS = "--impl torch.nn.RMSNorm -k forward_equivalence"


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps() -> list[dict]:
    return load()["jobs"]["normbench"]["steps"]


class Runner:
    """Runs `run:` steps as GitHub would (bash -e, the workflow's env, step outputs), in a tmp workspace."""

    def __init__(self, workspace: Path, env_overrides: dict[str, str]) -> None:
        self.workspace = workspace
        self.env = {**os.environ, **{k: str(v) for k, v in load()["env"].items()}, **env_overrides,
                    "GITHUB_WORKSPACE": str(workspace), "GITHUB_STEP_SUMMARY": str(workspace / "summary.md"),
                    # the venv's python and normbench console script, as the install step leaves them on PATH
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.env.pop("PYTEST_XDIST_WORKER", None)
        self.env.pop("PYTHONPATH", None)
        self.outputs: dict[str, dict[str, str]] = {}

    def expand(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            expr = match.group(1).strip()
            if expr == "github.workspace":
                return str(self.workspace)
            if expr.startswith("env."):
                return self.env[expr.removeprefix("env.")]
            step, _, key = expr.removeprefix("steps.").partition(".outputs.")
            return self.outputs.get(step, {}).get(key, "")
        return re.sub(r"\$\{\{(.*?)\}\}", value, text)

    def run(self, step: dict) -> subprocess.CompletedProcess[str]:
        output = self.workspace / "github_output"
        output.write_text("")
        proc = subprocess.run(["bash", "-e", "-c", self.expand(step["run"])], cwd=self.workspace,
                              env={**self.env, "GITHUB_OUTPUT": str(output)}, capture_output=True, text=True,
                              timeout=600)
        if step.get("id"):
            self.outputs[step["id"]] = dict(line.split("=", 1) for line in output.read_text().splitlines() if line)
        return proc


def test_workflow_shape():
    workflow = load()
    assert workflow["env"]["NORMBENCH_ARGS"].startswith("--impl ")
    names = [s.get("name") for s in steps()]
    assert names.index("Conformance suite") < names.index("Summary") < names.index("Gate")
    install = next(s for s in steps() if s.get("id") == "install")["run"]
    # torch's CPU wheel, then normbench by package (no checkout of normbench's repository), then the plugin
    assert "download.pytorch.org/whl/cpu" in install and '"$NORMBENCH_REQUIREMENT" -e .' in install
    assert not any("repository" in s.get("with", {}) for s in steps())
    # normbench is pinned: a release (==) or a git URL at a tag or commit, never a branch
    requirement = workflow["env"]["NORMBENCH_REQUIREMENT"]
    pinned = re.fullmatch(r"normbench==\S+|normbench @ git\+https://\S+/normbench@(\S+)", requirement)
    assert pinned and pinned.group(1) not in ("main", "master"), requirement
    # the suite runs from the plugin's repository
    suite = next(s for s in steps() if s.get("id") == "suite")["run"]
    assert "normbench test " in suite and "cd " not in suite
    # the summary and the gate run even when the suite failed
    for name in ("Summary", "Gate"):
        assert next(s for s in steps() if s.get("name") == name)["if"] == "always()"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("workspace")
    runner = Runner(ws, {"NORMBENCH_ARGS": ARGS})
    procs = {}
    for step in steps():
        # the install step needs the network; this venv already holds what it installs (normbench, torch CPU)
        if "run" in step and step.get("id") != "install":
            procs[step["name"]] = runner.run(step)
    return ws, runner, procs


@pytest.mark.slow
def test_steps_run_write_the_summary_and_gate_on_the_suite(workspace):
    ws, runner, procs = workspace
    suite = procs["Conformance suite"]
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
    assert runner.outputs["suite"]["exit"] == "0"
    record = json.loads(next((ws / "normbench-results" / "raw").glob("*/conformance.json")).read_text())
    judged = {o["test_id"]: o["verdict"] for o in record["outcomes"].values() if o["verdict"] != "unjudged"}
    assert judged and all(t.startswith("rmsnorm[torch.nn.RMSNorm-forward_equivalence") for t in judged)
    assert set(judged.values()) == {"pass"}
    assert procs["Summary"].returncode == 0, procs["Summary"].stderr
    summary = (ws / "summary.md").read_text()
    assert "torch.nn.RMSNorm" in summary and "Combined ranking" in summary
    assert (ws / "normbench-results" / "site" / "index.html").exists()
    assert (ws / "normbench-results" / "site" / "badges" / "torch.nn.RMSNorm.svg").exists()
    gate = procs["Gate"]
    assert gate.returncode == 0 and "gating on the suite's exit status" in gate.stdout


@pytest.mark.slow
def test_gate_fails_when_the_suite_failed(workspace):
    ws, runner, _ = workspace
    runner.outputs["suite"] = {"exit": "1"}
    try:
        gate = runner.run(next(s for s in steps() if s.get("name") == "Gate"))
    finally:
        runner.outputs["suite"] = {"exit": "0"}
    assert gate.returncode == 1


@pytest.mark.slow
def test_gate_compares_with_a_committed_baseline(workspace):
    ws, runner, _ = workspace
    gate_step = next(s for s in steps() if s.get("name") == "Gate")
    baseline = ws / ".normbench" / "baseline"
    shutil.copytree(ws / "normbench-results" / "raw", baseline / "raw")
    try:
        same = runner.run(gate_step)
        assert same.returncode == 0, same.stdout + same.stderr
        # an item the baseline judged is gone from the new run: the gate fails and says which
        path = next((baseline / "raw").glob("*/conformance.json"))
        record = json.loads(path.read_text())
        gone = "rmsnorm[torch.nn.RMSNorm-forward_equivalence-float128]"
        record["outcomes"][gone] = {**next(iter(o for o in record["outcomes"].values() if o["verdict"] == "pass")),
                                    "test_id": gone, "dtype": "float128"}
        path.write_text(json.dumps(record))
        regressed = runner.run(gate_step)
        assert regressed.returncode == 1, regressed.stdout + regressed.stderr
        assert gone in regressed.stdout
    finally:
        shutil.rmtree(ws / ".normbench")
