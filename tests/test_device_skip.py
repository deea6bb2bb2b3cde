"""A plugin none of whose declared devices this run has (a CUDA-only plugin on a CPU machine) is one explained skip
of that implementation and exit 0, not "no tests ran" (exit 5) with no reason. (A mistyped --impl suggests the
closest name: tests/test_suite_runner.py, which reads it from a run it makes anyway.)"""

from __future__ import annotations

import json

import pytest
import torch
from factories.suite_runs import run_suite

# slow (`pytest tests -m slow`, .ci/run): every test starts `pytest suite` in a subprocess
pytestmark = pytest.mark.slow


def test_a_cuda_only_plugin_on_a_machine_without_cuda_is_one_explained_skip(tmp_path):
    # on a CUDA machine, --device cpu makes the same situation (and says so)
    extra = ["--device", "cpu"] if torch.cuda.is_available() else []
    proc = run_suite("--results-dir", str(tmp_path), "--impl-path", "plugins.cuda_only:cuda_rmsnorm",
                     "--impl", "cuda_only.RMSNorm", *extra)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    why = "this run judges cpu only (--device)" if extra else "this machine has no CUDA device"
    assert f": devices: declares cuda only; {why}" in out.split("short test summary info")[-1]
    assert "1 skipped" in out and "no tests ran" not in out
    summary_block = out.split("normbench summary")[1].split("short test summary info")[0]
    assert "cuda_only.RMSNorm  not judged (the item skipped)" in summary_block
    assert "1 item: 0 judged, 1 skipped" in summary_block and "1 implementation, 1 item" in summary_block
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    summary = record["implementations"]["cuda_only.RMSNorm"]
    assert (summary["planned"], summary["judged"], summary["skipped"]) == (1, 0, 1)
    outcome = record["outcomes"]["rmsnorm[cuda_only.RMSNorm-devices]"]
    assert outcome["verdict"] == "skip" and "declares cuda only" in outcome["summary"]
    assert "cuda_only.RMSNorm" in (tmp_path / "LEADERBOARD.md").read_text()  # listed, as not judged
