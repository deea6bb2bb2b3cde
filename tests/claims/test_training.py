"""The training-dynamics claims' mechanics on tiny sizes: statistics, gradient norms, the trainability verdict."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normbench.claims import training as ct
from normbench.claims.result import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE

TINY = {"dim": 16, "heads": 2, "vocab": 32, "batch": 4, "seq": 8}


def test_batch_statistics_deviation_is_measured_against_the_running_statistics():
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(bn)
    log, handles = ct._watch_batch_statistics(model)
    x = torch.randn(4096, 3) * 2 + 1  # running mean 0, var 1: mean off by ~1 std, variance ~4x
    model(x)
    for h in handles:
        h.remove()
    ((d_mean, d_var),) = log["0"]
    assert d_mean == pytest.approx(1.0, abs=0.1) and d_var == pytest.approx(3.0, abs=0.3)


def test_token_batchnorm_leaves_padding_out_of_the_statistics():
    bn = ct._TokenBatchNorm(2)
    x = torch.zeros(2, 3, 2)
    x[:, :2] = torch.randn(2, 2, 2)
    x[:, 2] = 1000.0  # padding: would dominate the statistics if counted
    bn.mask = torch.tensor([[True, True, False], [True, True, False]])
    out = bn(x)
    assert out[:, 2].abs().max() == 0 and bn.running_mean.abs().max() < 1


def test_powernorm_claim_runs_and_records_its_curves():
    result = ct.powernorm_batch_statistics(steps=4, batch=4, seq=8, vocab=32, dim=16, heads=2, layers=1, image=8,
                                           width=4, classes=2)
    assert result.verdict in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)
    d = result.details
    assert all(math.isfinite(d[k]) and d[k] >= 0 for k in ("transformer_mean_dev", "cnn_mean_dev", "ratio_var"))
    assert set(d["plot"]["panels"]) == {"|batch mean - running mean| / running std", "|batch var / running var - 1|"}


def test_layer_gradient_norms_one_per_layer():
    norms = ct.layer_gradient_norms("post", layers=3, seed=0, **TINY)
    assert len(norms) == 3 and all(n > 0 for n in norms)
    with pytest.raises(ValueError, match="placement 'middle'"):
        ct._Encoder(8, 8, 2, 1, "middle")


def test_prenorm_postnorm_verdict_follows_the_thresholds(monkeypatch):
    fake = {"pre": [1.0, 1.1, 0.9], "post": [1.0, 2.0, 4.0]}
    monkeypatch.setattr(ct, "layer_gradient_norms", lambda placement, **kw: fake[placement])
    assert ct.prenorm_postnorm_gradients(layers=3, seeds=1).verdict == HOLDS
    fake["post"] = [1.0, 1.0, 0.8]  # Post-LN flat too: the claim's contrast is missing
    assert ct.prenorm_postnorm_gradients(layers=3, seeds=1).verdict == INCONCLUSIVE
    fake["pre"] = [3.0, 1.0, 0.5]
    assert ct.prenorm_postnorm_gradients(layers=3, seeds=1).verdict == DOES_NOT_HOLD


def test_prenorm_postnorm_runs_for_real_on_a_tiny_encoder():
    result = ct.prenorm_postnorm_gradients(layers=2, seeds=1, batch=4, seq=8, dim=16, heads=2, vocab=32)
    assert len(result.details["post_ln"]) == 2 and len(result.details["plot"]["panels"]) == 1


def test_deepnorm_scales_the_residual_and_the_initialisation():
    plain, deep = ct._Encoder(8, 16, 2, 4, "post"), ct._Encoder(8, 16, 2, 4, "deepnorm")
    assert plain.alpha == 1.0 and deep.alpha == pytest.approx(8 ** 0.25)
    # beta = (8N)^-1/4 shrinks the value / output / FFN weights, not the query / key ones
    assert deep.ffn[0].fc2.weight.std() < 0.5 * plain.ffn[0].fc2.weight.std()
    assert deep.attn[0].q.weight.std().item() == pytest.approx(plain.attn[0].q.weight.std().item(), rel=0.3)


def test_trained_means_finite_and_clearly_lower():
    assert ct.trained([4.0] * 10 + [1.0] * 10)
    assert not ct.trained([4.0] * 19 + [float("nan")])
    assert not ct.trained([4.0] * 20)
    assert not ct.trained([4.0, 1.0])  # too short to tell


def test_deepnorm_verdict_from_the_training_outcomes():
    def fake(outcome):
        def train(placement, **kw):
            good = [4.0] * 10 + [1.0] * 10
            return good if outcome[placement] else [4.0] * 10 + [float("inf")]
        return train

    holds = ct.deepnorm_depth(depths=(2, 4), train=fake({"post": False, "deepnorm": True}))
    assert holds.verdict == HOLDS and holds.details["holds_at"] == [2, 4]
    assert ct.deepnorm_depth(depths=(2,), train=fake({"post": True, "deepnorm": True})).verdict == INCONCLUSIVE
    assert ct.deepnorm_depth(depths=(2,), train=fake({"post": False, "deepnorm": False})).verdict == DOES_NOT_HOLD


def test_deepnorm_trains_for_real_on_a_tiny_stack():
    losses = ct.train_curve("deepnorm", layers=2, steps=3, lr=1e-3, seed=0, **TINY)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
