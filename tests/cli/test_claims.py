"""`normbench claims`: prints the verdicts, records them and re-renders the leaderboard."""

from __future__ import annotations

import torch

from normbench.claims import registry
from normbench.claims.speed import rmsnorm_vs_layernorm
from normbench.cli.main import main
from normbench.store.validate import load_record


def test_claims_are_recorded_and_shown(tmp_path, capsys, monkeypatch):
    def tiny(device, variants=("eager",)):
        return [rmsnorm_vs_layernorm(device, tokens=32, hidden=(64,), dtypes=("float32",),
                                     passes=("inference",), repeats=1, budget_s=0.01, variant=v)
                for v in variants]

    monkeypatch.setitem(registry.CLAIMS, "rmsnorm_vs_layernorm", tiny)
    code = main(["claims", "--only", "rmsnorm_vs_layernorm", "--device", "cpu", "--threads", "1",
                 "--variant", "eager", "--variant", "onnxruntime", "--results-dir", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "rmsnorm_vs_layernorm" in out and "here" in out
    record = load_record(next((tmp_path / "raw").glob("*/claims.json")))
    assert record["claims"]["rmsnorm_vs_layernorm"]["verdict"].endswith("here")
    assert "rmsnorm_vs_layernorm[export]" in record["claims"]  # --variant onnxruntime: export's older name
    assert "## Claims lab" in (tmp_path / "LEADERBOARD.md").read_text()
    torch.set_num_threads(1)


def test_cuda_without_a_gpu_is_refused(capsys):
    if torch.cuda.is_available():
        return
    assert main(["claims", "--device", "cuda", "--no-record"]) == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_training_claims_stay_out_of_the_default_run(monkeypatch):
    ran = []
    for name in registry.CLAIMS:
        monkeypatch.setitem(registry.CLAIMS, name, lambda device, variants, name=name: ran.append(name) or [])
    registry.run_claims("cpu")
    assert set(ran) == {"rmsnorm_vs_layernorm", "folded_norm_vs_layernorm"}
    ran.clear()
    registry.run_claims("cpu", training=True)
    assert set(ran) == set(registry.CLAIMS)
    ran.clear()
    registry.run_claims("cpu", only=["deepnorm_depth"])
    assert ran == ["deepnorm_depth"]


def test_an_unknown_variant_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown variant 'tensorrt'"):
        registry.run_claims("cpu", variants=("tensorrt",))
