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

import actions_emulator
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


# examples/ci/normbench-matrix.yml: the scale-out recipe, one job per implementation into a folder of its own, then a
# job that merges the folders and renders one leaderboard. Its jobs run here through tests/actions_emulator.py, each
# judge job in a workspace of its own (its own machine), the artifacts exchanged as folders.

MATRIX_WORKFLOW = ROOT / "examples" / "ci" / "normbench-matrix.yml"
MATRIX_IMPLS = ["torch.nn.LayerNorm", "torch.nn.RMSNorm"]
# LayerNorm's float16 / bfloat16 items here are declared known failures and RMSNorm's pass: more than one verdict to
# compare, and few items (the others are planned and recorded as not judged)
MATRIX_ARGS = "-k weight_gradient_reduction"
MATRIX_ENV = {"NORMBENCH_IMPLS": json.dumps(MATRIX_IMPLS), "NORMBENCH_RUNNERS": json.dumps(["ubuntu-latest"]),
              "NORMBENCH_ARGS": MATRIX_ARGS}
MERGED = "normbench-results"


def load_matrix() -> dict:
    return yaml.safe_load(MATRIX_WORKFLOW.read_text())


def conformance(results: Path) -> tuple[dict[str, str], dict[str, dict]]:
    """{test id: verdict} of every stored outcome, and the per-implementation counts, over every machine's record."""
    verdicts, counts = {}, {}
    for path in sorted(results.glob("raw/*/conformance.json")):
        record = json.loads(path.read_text())
        verdicts.update({o["test_id"]: o["verdict"] for o in record["outcomes"].values()})
        counts.update({name: {k: v for k, v in entry.items() if isinstance(v, int)}
                       for name, entry in record["implementations"].items()})
    return verdicts, counts


def recipe_problems(final_ws: Path, final: actions_emulator.JobResult, single: Path) -> list[str]:
    """What the merged folder of the matrix lacks against one run of the same implementations; [] when nothing."""
    problems = [f"step {s.name!r} failed: {s.stdout[-1500:]}{s.stderr[-1500:]}" for s in final.steps if not s.ok]
    merged = final_ws / MERGED
    verdicts, counts = conformance(merged)
    expected, expected_counts = conformance(single)
    if not verdicts:
        problems.append(f"no conformance records under {merged / 'raw'}")
    problems += [f"{tid}: {verdicts.get(tid, 'missing')} in the merge, {v} in one run"
                 for tid, v in expected.items() if verdicts.get(tid) != v]
    problems += [f"{tid}: in the merge, not in one run" for tid in set(verdicts) - set(expected)]
    problems += [f"{name}: counts {counts.get(name)} in the merge, {c} in one run"
                 for name, c in expected_counts.items() if counts.get(name) != c]
    board = merged / "LEADERBOARD.md"
    text = board.read_text() if board.exists() else ""
    problems += [f"{name} is not on the leaderboard" for name in MATRIX_IMPLS if f"| {name} " not in text]
    return problems


@pytest.fixture(scope="module")
def matrix_recipe(tmp_path_factory):
    """The plan job, then every judge job of the matrix in a workspace of its own, and one run of every
    implementation of the matrix as the merge's reference."""
    workflow, root = load_matrix(), tmp_path_factory.mktemp("matrix")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    plan = actions_emulator.Job(workflow, "plan", root / "plan", artifacts, env=MATRIX_ENV).run()
    assert plan.ok, [(s.name, s.stderr) for s in plan.steps]
    needs = {"plan": plan.outputs}
    combos = actions_emulator.matrix_combinations(workflow, "judge", needs)
    judged = {}
    for index, combo in enumerate(combos):
        judged[combo["impl"]] = actions_emulator.Job(workflow, "judge", root / f"judge-{index}", artifacts,
                                                     env=MATRIX_ENV, matrix=combo, needs=needs,
                                                     skip_ids=("install",)).run()
    single = root / "single"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_XDIST_WORKER")}
    proc = subprocess.run(["normbench", "test", "-p", "no:cacheprovider", "-q", "--results-dir", str(single),
                           *[a for name in MATRIX_IMPLS for a in ("--impl", name)], *MATRIX_ARGS.split()],
                          cwd=root, capture_output=True, text=True, timeout=600,
                          env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return workflow, root, artifacts, needs, judged, single


def final_job(workflow: dict, workspace: Path, artifacts: Path, needs: dict) -> actions_emulator.JobResult:
    return actions_emulator.Job(workflow, "leaderboard", workspace, artifacts, env=MATRIX_ENV,
                                needs={**needs, "judge": {}}, skip_ids=("install",)).run()


def test_matrix_workflow_shape():
    jobs = load_matrix()["jobs"]
    assert jobs["judge"]["needs"] == "plan" and set(jobs["leaderboard"]["needs"]) == {"plan", "judge"}
    assert jobs["judge"]["strategy"]["fail-fast"] is False
    # the last job runs when a judge job failed its gate: that job's records are uploaded all the same
    assert "always()" in jobs["leaderboard"]["if"]
    judge = {s.get("name") or s["uses"].split("@")[0]: s for s in jobs["judge"]["steps"]}
    assert "${{ matrix.impl }}" in judge["Conformance suite"]["run"]
    assert '--results-dir "$SHARD"' in judge["Conformance suite"]["run"]
    upload = judge["actions/upload-artifact"]
    assert upload["with"]["path"] == upload["with"]["name"] == "${{ env.SHARD }}" and upload["if"] == "always()"
    names = [s.get("name") for s in jobs["leaderboard"]["steps"]]
    assert names.index("Merge") < names.index("Leaderboard") < names.index("Every job's folder arrived")


@pytest.mark.parametrize("bad", ['["a", ', '"torch.nn.LayerNorm"', "[]", '[""]'])
def test_plan_refuses_a_list_that_is_not_a_json_list_of_names(tmp_path, bad):
    ok = actions_emulator.Job(load_matrix(), "plan", tmp_path / "ok", tmp_path, env=MATRIX_ENV).run()
    assert ok.ok and json.loads(ok.outputs["impls"]) == MATRIX_IMPLS
    refused = actions_emulator.Job(load_matrix(), "plan", tmp_path / "bad", tmp_path,
                                   env={**MATRIX_ENV, "NORMBENCH_IMPLS": bad}).run()
    assert not refused.ok and "NORMBENCH_IMPLS must be a JSON list" in refused.steps[0].stdout


@pytest.mark.slow
def test_every_job_judges_its_own_implementation_into_its_own_folder(matrix_recipe):
    _, root, artifacts, _, judged, _ = matrix_recipe
    assert list(judged) == MATRIX_IMPLS
    for impl, job in judged.items():
        assert job.ok, [(s.name, s.stdout[-2000:], s.stderr[-2000:]) for s in job.steps]
        verdicts, counts = conformance(artifacts / f"normbench-shard-ubuntu-latest-{impl}")
        assert list(counts) == [impl]
        assert {v for v in verdicts.values() if v != "unjudged"} and all(
            f"[{impl}-weight_gradient_reduction" in tid for tid, v in verdicts.items() if v != "unjudged")


@pytest.mark.slow
def test_merged_matrix_holds_every_item_with_the_verdicts_of_one_run(matrix_recipe, tmp_path):
    workflow, _, artifacts, needs, _, single = matrix_recipe
    final = final_job(workflow, tmp_path, artifacts, needs)
    assert recipe_problems(tmp_path, final, single) == []
    verdicts, _ = conformance(tmp_path / MERGED)
    assert {"pass", "xfail"} <= set(verdicts.values()), set(verdicts.values())
    assert "torch.nn.LayerNorm" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / MERGED / "site" / "index.html").exists()


@pytest.mark.slow
def test_without_the_merge_step_the_recipe_is_flagged(matrix_recipe, tmp_path):
    workflow, _, artifacts, needs, _, single = matrix_recipe
    broken = {**workflow, "jobs": {**workflow["jobs"], "leaderboard": {
        **workflow["jobs"]["leaderboard"],
        "steps": [s for s in workflow["jobs"]["leaderboard"]["steps"] if s.get("name") != "Merge"]}}}
    problems = recipe_problems(tmp_path, final_job(broken, tmp_path, artifacts, needs), single)
    assert any("no conformance records" in p for p in problems), problems
    assert any("step 'Leaderboard' failed" in p for p in problems), problems


@pytest.mark.slow
def test_a_lost_job_folder_fails_the_last_job_and_is_flagged(matrix_recipe, tmp_path):
    workflow, _, artifacts, needs, _, single = matrix_recipe
    partial = tmp_path / "artifacts"
    shutil.copytree(artifacts, partial)
    lost = partial / "normbench-shard-ubuntu-latest-torch.nn.RMSNorm"
    shutil.rmtree(lost)
    final = final_job(workflow, tmp_path / "ws", partial, needs)
    arrived = final.step("Every job's folder arrived")
    assert not arrived.ok and "no results of torch.nn.RMSNorm on ubuntu-latest" in arrived.stdout
    problems = recipe_problems(tmp_path / "ws", final, single)
    assert any(p.startswith("rmsnorm[torch.nn.RMSNorm-") and "missing in the merge" in p for p in problems)
    assert "torch.nn.RMSNorm is not on the leaderboard" in problems


def test_the_emulator_refuses_what_it_does_not_run(tmp_path):
    def job(*steps: dict) -> actions_emulator.Job:
        workflow = {"env": {"A": "1"}, "jobs": {"j": {"steps": list(steps)}}}
        return actions_emulator.Job(workflow, "j", tmp_path / "ws", tmp_path)

    ran = job({"name": "echo", "run": 'echo "${{ env.A }}$A"'}).run()
    assert ran.ok and ran.step("echo").stdout == "11\n"
    with pytest.raises(actions_emulator.UnsupportedWorkflow, match=r"steps\[0\] \(cache\).*actions/cache@v4"):
        job({"name": "cache", "uses": "actions/cache@v4"}).run()
    with pytest.raises(actions_emulator.UnsupportedWorkflow, match=r"secrets\.TOKEN"):
        job({"name": "token", "run": "echo ${{ secrets.TOKEN }}"}).run()
    # an upload that finds no files fails when the template says so, as upload-artifact does
    upload = {"uses": "actions/upload-artifact@v4",
              "with": {"name": "x", "path": "absent", "if-no-files-found": "error"}}
    after = {"name": "after", "run": "true"}
    failed = job(upload, after, {**after, "name": "always", "if": "always()"}).run()
    assert [s.name for s in failed.steps] == ["actions/upload-artifact@v4", "always"] and not failed.steps[0].ok
