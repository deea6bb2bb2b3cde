"""`normbench run`: conformance (parallel), then benchmarks (serial, per device, progress bar), then claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normbench.cli import run as run_verb
from normbench.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def test_stages_are_the_documented_pytest_runs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run_verb, "_pytest", lambda argv, cwd: calls.append(argv) or 0)
    monkeypatch.chdir(ROOT)
    code = main(["run", "--family", "rmsnorm", "--device", "cpu", "--dtype", "float32", "--shape", "8x16",
                 "--threads", "1", "--results-dir", str(tmp_path), "--skip-claims"])
    assert code == 0 and len(calls) == 2
    conformance, bench = calls
    assert conformance[0].endswith("suite/conformance.py") and "-n" in conformance
    assert "--impl=torch.nn.RMSNorm" in conformance and "--impl=torch.nn.LayerNorm" not in conformance
    assert bench[0].endswith("suite/benchmarks") and "normbench.bench.pytest_plugin" in bench and "-n" not in bench
    assert {"--bench-family=rmsnorm", "--bench-dtype=float32", "--bench-shape=8x16", "--bench-threads=1",
            "--device=cpu", "--bench-progress"} <= set(bench)
    assert any(a.startswith("--benchmark-json=") and "pytest-benchmark" in a for a in bench)


@pytest.mark.slow
def test_a_tiny_benchmark_run_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    proc = subprocess.run([sys.executable, "-m", "normbench.cli.main", "run", "--impl", "torch.nn.RMSNorm",
                           "--shape", "8x64", "--dtype", "float32", "--pass", "inference", "--budget", "0.01",
                           "--threads", "1", "--device", "cpu", "--results-dir", str(tmp_path),
                           "--skip-conformance", "--skip-claims"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "benchmarks (cpu) ok" in proc.stdout
    machine = next((tmp_path / "raw").iterdir())
    record = json.loads((machine / "benchmark-cpu.json").read_text())
    assert "rmsnorm[torch.nn.RMSNorm-8x64-float32-inference]" in record["results"]
    assert json.loads((machine / "pytest-benchmark" / "cpu.json").read_text())["benchmarks"]
    assert (tmp_path / "LEADERBOARD.html").exists() and list((tmp_path / "plots").glob("rmsnorm-cpu-*.png"))
