"""A stand-in for GitHub Actions, enough to run the workflow templates of examples/ci/ here: a job's `run:` steps in
bash as the runner runs them (`-eo pipefail`, the workflow's, job's and step's env, `$GITHUB_OUTPUT` read back into
step outputs, job outputs), its matrix from `fromJSON` of an earlier job's outputs, and the artifact actions as
folder copies (upload: a job's folder into a shared artifacts folder under its name; download: every artifact
matching the pattern, each into a folder of its name, as download-artifact v4 does without merge-multiple).

A step after a failed one runs only when its `if:` says `always()`. Anything else the templates might use (another
action, an expression this does not know) is an error naming the step, so the test cannot pass on a step it did not
run.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")
#: actions whose work this machine already did: the workspace stands for the checkout, this interpreter for the Python
NO_OP_ACTIONS = ("actions/checkout@", "actions/setup-python@")


class UnsupportedWorkflow(Exception):
    """The template uses something this emulator does not run."""


@dataclass
class Context:
    workspace: Path
    env: dict[str, str]
    matrix: dict[str, str] = field(default_factory=dict)
    needs: dict[str, dict[str, str]] = field(default_factory=dict)
    steps: dict[str, dict[str, str]] = field(default_factory=dict)

    def value(self, expr: str, where: str) -> Any:
        expr = expr.strip()
        inner = re.fullmatch(r"fromJSON\((.*)\)", expr)
        if inner:
            return json.loads(self.value(inner.group(1), where))
        if expr == "github.workspace":
            return str(self.workspace)
        scope, _, rest = expr.partition(".")
        if scope == "env" and rest in self.env:
            return self.env[rest]
        if scope == "matrix" and rest in self.matrix:
            return self.matrix[rest]
        if scope in ("steps", "needs"):
            owner, _, key = rest.partition(".outputs.")
            outputs = (self.steps if scope == "steps" else self.needs).get(owner)
            if outputs is not None and key:
                return outputs.get(key, "")  # an output never written reads as "", as on GitHub
        raise UnsupportedWorkflow(f"{where}: ${{{{ {expr} }}}} is not known to the emulator")

    def expand(self, text: Any, where: str) -> Any:
        """`text` with every ${{ }} substituted; a text that is one expression keeps its value's type (a list)."""
        if not isinstance(text, str):
            return text
        whole = EXPRESSION.fullmatch(text.strip())
        if whole:
            return self.value(whole.group(1), where)
        return EXPRESSION.sub(lambda m: str(self.value(m.group(1), where)), text)


@dataclass
class StepResult:
    name: str
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class JobResult:
    steps: list[StepResult]
    outputs: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def step(self, name: str) -> StepResult:
        return next(s for s in self.steps if s.name == name)


def step_name(step: dict[str, Any]) -> str:
    return step.get("name") or step.get("id") or step.get("uses") or step["run"].splitlines()[0]


def matrix_combinations(workflow: dict[str, Any], job_id: str,
                        needs: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """Every combination of the job's `strategy.matrix`, in GitHub's order (the first key varies slowest)."""
    matrix = workflow["jobs"][job_id].get("strategy", {}).get("matrix")
    if matrix is None:
        return [{}]
    ctx = Context(Path("."), {}, needs=needs)
    if set(matrix) & {"include", "exclude"}:
        raise UnsupportedWorkflow(f"jobs.{job_id}.strategy.matrix: include / exclude are not emulated")
    axes = {key: ctx.expand(values, f"jobs.{job_id}.strategy.matrix.{key}") for key, values in matrix.items()}
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UnsupportedWorkflow(f"jobs.{job_id}.strategy.matrix.{key}: not a non-empty list: {values!r}")
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


class Job:
    """One run of one job of `workflow` in `workspace`, its artifacts exchanged through `artifacts`."""

    def __init__(self, workflow: dict[str, Any], job_id: str, workspace: Path, artifacts: Path, *,
                 env: dict[str, str] | None = None, matrix: dict[str, str] | None = None,
                 needs: dict[str, dict[str, str]] | None = None, skip_ids: tuple[str, ...] = ()) -> None:
        self.job = workflow["jobs"][job_id]
        self.job_id = job_id
        self.artifacts = artifacts
        self.skip_ids = skip_ids
        workspace.mkdir(parents=True, exist_ok=True)
        base = {**{k: str(v) for k, v in workflow.get("env", {}).items()}, **(env or {})}
        self.ctx = Context(workspace, base, matrix=matrix or {}, needs=needs or {})
        for key, value in self.job.get("env", {}).items():
            self.ctx.env[key] = str(self.ctx.expand(value, f"jobs.{job_id}.env.{key}"))

    def run(self) -> JobResult:
        results: list[StepResult] = []
        for index, step in enumerate(self.job["steps"]):
            where = f"jobs.{self.job_id}.steps[{index}] ({step_name(step)})"
            if step.get("id") in self.skip_ids:
                continue
            if not all(r.ok for r in results) and "always()" not in str(step.get("if", "")):
                continue
            if "run" in step:
                results.append(self._run(step, where))
            else:
                results.append(self._uses(step, where))
        outputs = {k: str(self.ctx.expand(v, f"jobs.{self.job_id}.outputs.{k}"))
                   for k, v in self.job.get("outputs", {}).items()}
        return JobResult(results, outputs)

    def _run(self, step: dict[str, Any], where: str) -> StepResult:
        ws = self.ctx.workspace
        output = ws / ".github_output"
        output.write_text("")
        env = {**os.environ, **self.ctx.env,
               **{k: str(self.ctx.expand(v, f"{where}.env.{k}")) for k, v in step.get("env", {}).items()},
               "GITHUB_WORKSPACE": str(ws), "GITHUB_STEP_SUMMARY": str(ws / "summary.md"),
               "GITHUB_OUTPUT": str(output),
               # the venv's python and normbench console script, as the install step leaves them on PATH
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        env.pop("PYTEST_XDIST_WORKER", None)
        env.pop("PYTHONPATH", None)
        script = self.ctx.expand(step["run"], where)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=600)
        if step.get("id"):
            self.ctx.steps[step["id"]] = dict(line.split("=", 1) for line in output.read_text().splitlines()
                                              if "=" in line)
        return StepResult(step_name(step), proc.returncode, proc.stdout, proc.stderr)

    def _uses(self, step: dict[str, Any], where: str) -> StepResult:
        uses = step["uses"]
        args = {k: self.ctx.expand(v, f"{where}.with.{k}") for k, v in step.get("with", {}).items()}
        if uses.startswith(NO_OP_ACTIONS):
            return StepResult(step_name(step), 0)
        if uses.startswith("actions/upload-artifact@"):
            source = self.ctx.workspace / args["path"]
            target = self.artifacts / args["name"]
            if target.exists():
                return StepResult(step_name(step), 1, stderr=f"an artifact named {args['name']} exists already")
            if not source.is_dir() or not any(source.iterdir()):
                missing = args.get("if-no-files-found", "warn") == "error"
                return StepResult(step_name(step), int(missing), stderr=f"no files found at {args['path']}")
            shutil.copytree(source, target)
            return StepResult(step_name(step), 0)
        if uses.startswith("actions/download-artifact@"):
            if "pattern" not in args or args.get("merge-multiple"):
                raise UnsupportedWorkflow(f"{where}: only download-artifact with a pattern, without merge-multiple")
            dest = self.ctx.workspace / args.get("path", ".")
            names = sorted(p.name for p in self.artifacts.iterdir() if fnmatch.fnmatchcase(p.name, args["pattern"]))
            for name in names:
                shutil.copytree(self.artifacts / name, dest / name)
            return StepResult(step_name(step), 0, stdout=f"downloaded {names}")
        raise UnsupportedWorkflow(f"{where}: the action {uses} is not emulated")
