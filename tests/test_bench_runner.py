"""suite/benchmarks end to end: opt-in collection, pytest-benchmark JSON, normbench records, xdist refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--impl", "torch.nn.LayerNorm", "--impl", "F.layer_norm", "--bench-shape", "8x64", "--bench-dtype", "float32",
        "--bench-pass", "forward", "--bench-pass", "inference", "--bench-budget", "0.01", "--bench-roofline-mib", "1",
        "--bench-threads", "1", "--device", "cpu"]


def pytest_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    json_path = results / "pytest-benchmark.json"
    proc = pytest_run("suite/benchmarks", "-p", "normbench.bench.pytest_plugin", "-q", "--results-dir", str(results),
                      "--benchmark-json", str(json_path), "--bench-crosscheck", *TINY)
    return proc, results, json_path


@pytest.mark.slow
def test_benchmarks_record_normbench_and_pytest_benchmark_results(bench_run):
    proc, results, json_path = bench_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    record_path = next((results / "raw").glob("*/benchmark-cpu.json"))
    record = json.loads(record_path.read_text())
    assert record["api_version"] == 1 and record["kind"] == "benchmark" and record["threads"] == 1
    assert record["roofline"]["copy_gbps"] > 0
    entry = record["results"]["layernorm[F.layer_norm-8x64-float32-forward]"]
    assert entry["rounds"] >= 10 and entry["median_s"] > 0 and entry["q1_s"] <= entry["median_s"] <= entry["q3_s"]
    assert entry["gbps"] == pytest.approx(entry["bytes"] / entry["median_s"] / 1e9)
    # size-matched, cache-aware roofline: an 8x64 case (4 KiB) runs from the L2, and is bounded by a copy of its
    # own working set (never below the DRAM copy)
    levels = {lv["name"]: lv for lv in record["roofline"]["levels"]}
    assert entry["roofline_level"] == "L2" and levels["DRAM"]["copy_gbps"] == record["roofline"]["copy_gbps"]
    assert entry["roofline_working_set_bytes"] == entry["bytes"]
    assert entry["roofline_gbps"] >= record["roofline"]["copy_gbps"]
    assert entry["roofline_pct"] == pytest.approx(100 * entry["gbps"] / entry["roofline_gbps"])
    assert entry["dram_pct"] == pytest.approx(100 * entry["gbps"] / record["roofline"]["copy_gbps"])
    assert entry["baseline"] == "torch.nn.LayerNorm" and entry["peak_mem_bytes"] > 0
    check = entry["crosscheck"]
    assert check["torch_utils_benchmark_median_s"] > 0 and check["table_median_s"] == entry["median_s"]
    assert check["iterations"] == entry["iterations"]  # the table's schedule, not one of its own
    assert any(k.startswith("roofline[copy-") for k in record["results"])
    # pytest-benchmark's own JSON, with normbench's id beside its statistics
    data = json.loads(json_path.read_text())
    names = {b["extra_info"]["normbench_id"] for b in data["benchmarks"]}
    assert names == set(record["results"])
    bench = next(b for b in data["benchmarks"] if b["extra_info"]["normbench_id"] == entry["id"])
    assert bench["stats"]["median"] == pytest.approx(entry["median_s"])
    board = results / "LEADERBOARD.md"
    assert board.exists() and "Performance: layernorm" in board.read_text()
    assert "normbench benchmarks" in proc.stdout and "harness copy" in proc.stdout
    assert f"table median {entry['median_s'] * 1e3:.4f} ms" in proc.stdout and "crosscheck:" in proc.stdout
    # a bare pytest run without the wait policy says how to get timings the timers agree on
    assert ("OMP_WAIT_POLICY is unset" in proc.stdout) == (not os.environ.get("OMP_WAIT_POLICY"))
    # the allocator's steady state is the default, and the record and the summary say so
    if sys.platform.startswith("linux"):
        from normbench.bench.allocator import STEADY

        assert record["malloc"] == entry["malloc"] == STEADY and f"malloc: {STEADY}" in proc.stdout


@pytest.mark.slow
def test_pytest_benchmark_compare_reads_the_json(bench_run):
    _, _, json_path = bench_run
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(json_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "test_throughput" in proc.stdout


@pytest.mark.slow
def test_benchmarks_refuse_xdist():
    proc = pytest_run("suite/benchmarks", "-p", "normbench.bench.pytest_plugin", "-n", "2", *TINY)
    assert proc.returncode != 0
    assert "never run under pytest-xdist" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_plain_suite_run_never_collects_benchmarks():
    proc = pytest_run("suite", "--collect-only", "-q", "--no-record", "--impl", "torch.nn.LayerNorm")
    assert "conformance.py::" in proc.stdout
    assert "bench_norms" not in proc.stdout and "test_throughput" not in proc.stdout


@pytest.mark.slow
def test_a_bad_option_is_one_clear_failure():
    proc = pytest_run("suite/benchmarks", "-p", "normbench.bench.pytest_plugin", "-q", "--no-record",
                      "--impl", "no.such.impl", "--bench-shape", "4x8", "--bench-budget", "0.01")
    assert proc.returncode == 1
    assert "--impl 'no.such.impl' matches no implementation" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the GPU path runs instead")
def test_the_cuda_path_skips_with_its_reason_where_there_is_no_gpu(tmp_path):
    proc = pytest_run("suite/benchmarks", "-p", "normbench.bench.pytest_plugin", "-q", "-rs", "--results-dir",
                      str(tmp_path), *[a if a != "cpu" else "cuda" for a in TINY])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 skipped" in proc.stdout and "no CUDA device here" in proc.stdout


@pytest.mark.slow
def test_interleaved_rounds_pool_their_samples(tmp_path):
    proc = pytest_run("suite/benchmarks", "-p", "normbench.bench.pytest_plugin", "-q", "--results-dir", str(tmp_path),
                      "--bench-rounds", "2", "--bench-malloc", "default", "--bench-crosscheck", *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:]
    record = json.loads(next((tmp_path / "raw").glob("*/benchmark-cpu.json")).read_text())
    assert record["malloc"] == "system default"  # --bench-malloc default leaves glibc's thresholds alone
    entry = record["results"]["layernorm[F.layer_norm-8x64-float32-forward]"]
    # two passes of at least 10 rounds each, pooled into one entry
    assert entry["passes"] == 2 and entry["rounds"] >= 20
    # the cross-check pools the same passes as the table: one round of each other timer per table round
    check = entry["crosscheck"]
    assert check["table_median_s"] == entry["median_s"] and check["rounds"] == entry["rounds"]


def test_normbench_run_gives_the_benchmarks_a_passive_omp_wait_policy(tmp_path, monkeypatch):
    from normbench.cli import run as run_verb
    from normbench.cli.main import main

    seen = []
    monkeypatch.setattr(run_verb, "_pytest", lambda argv, cwd: seen.append((argv, os.environ.get("OMP_WAIT_POLICY")))
                        or 0)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.chdir(ROOT)
    args = ["run", "--impl", "torch.nn.RMSNorm", "--device", "cpu", "--results-dir", str(tmp_path), "--skip-claims",
            "--skip-conformance", "--variant", "compile"]
    assert main(args) == 0
    ((argv, policy),) = seen
    assert policy == "PASSIVE" and "--bench-variant=compile" in argv
    assert "OMP_WAIT_POLICY" not in os.environ  # restored after the benchmark process
    seen.clear()
    assert main([*args, "--omp-wait-policy", "inherit"]) == 0
    assert seen[0][1] is None
