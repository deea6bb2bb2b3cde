"""The claims lab's measurements, on tiny shapes: verdicts are stated as holding here or not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normbench.claims.result import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from normbench.claims.speed import PreNormBlock, folded_norm_vs_layernorm, rmsnorm_vs_layernorm


def test_rmsnorm_vs_layernorm_reports_every_case():
    result = rmsnorm_vs_layernorm(tokens=64, hidden=(128,), dtypes=("float32",), repeats=1, budget_s=0.02)
    assert result.verdict in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)
    assert len(result.details["cases"]) == 2 and result.details["geomean_rmsnorm_speedup"] > 0
    assert "torch eager RMSNorm" in result.measured and result.as_dict()["threads"] == torch.get_num_threads()


def test_folded_offline_norm_vs_layernorm_folds_both_norms():
    speed, memory = folded_norm_vs_layernorm(batch=2, seq=8, dim=32, heads=2, repeats=1, budget_s=0.02)
    assert speed.details["folded"] == ["norm1 -> qkv (input side)", "norm2 -> fc1 (input side)"]
    assert speed.details["fold_verified_rel_error"] < 1e-4
    for claim in (speed, memory):
        assert claim.verdict.startswith((HOLDS, DOES_NOT_HOLD, INCONCLUSIVE))
    assert "31%" in speed.claim and "18%" in memory.claim


def test_prenorm_block_shapes():
    block = PreNormBlock(16, 2, nn.LayerNorm)
    assert block(torch.randn(2, 5, 16)).shape == (2, 5, 16)


@pytest.mark.deploy
def test_the_folded_claim_is_judged_per_variant():
    (speed,) = folded_norm_vs_layernorm(batch=2, seq=8, dim=32, heads=2, repeats=1, budget_s=0.02,
                                        variant="onnxruntime")
    # onnxruntime, export's older name, measures the export deployment under its canonical name
    assert speed.id == "folded_norm_speed[export]" and speed.measured.startswith("export:")
    assert "LayerNormalization" in speed.details["onnx_ops"]["layernorm"]
    assert "LayerNormalization" not in speed.details["onnx_ops"]["offline_folded"]  # the fold removed the norm
    assert speed.verdict.startswith((HOLDS, DOES_NOT_HOLD, INCONCLUSIVE))


@pytest.mark.deploy
def test_the_rmsnorm_claim_explains_the_cases_a_variant_cannot_build():
    result = rmsnorm_vs_layernorm(tokens=16, hidden=(32,), dtypes=("float32", "bfloat16"),
                                  passes=("inference", "forward+backward"), repeats=1, budget_s=0.01,
                                  variant="onnxruntime")
    assert result.id == "rmsnorm_vs_layernorm[export]" and len(result.details["cases"]) == 1
    assert any("inference only" in s for s in result.details["skipped"])
    assert any("bfloat16" in s for s in result.details["skipped"])
