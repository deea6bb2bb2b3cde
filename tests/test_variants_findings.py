"""Minimal standalone reproductions of what the deployment variants found in torch's own modules (issue 10, part
5). Each asserts the deviation as measured with torch 2.13 CPU; when torch fixes it the test fails, and the
known-failure entry it backs (suite/known_failures/) must go."""

from __future__ import annotations

import torch
from torch import nn


def _ulp_error(got: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((got.double() - truth).abs() / (truth.abs() * torch.finfo(torch.float32).eps)).max())


def test_compiled_batchnorm_running_var_loses_precision_on_a_large_mean_batch():
    # batchnorm[torch.nn.BatchNorm1d-adversarial_inputs-train-float32-compile]: mean 2000, std 1, 4 rows
    gen = torch.Generator().manual_seed(0)
    x = (2000.0 + torch.randn(4, 8, generator=gen, dtype=torch.float64)).float()
    truth = 0.9 * 1.0 + 0.1 * x.double().var(0, unbiased=True)  # momentum 0.1, running_var starts at 1
    eager, compiled = nn.BatchNorm1d(8).train(), nn.BatchNorm1d(8).train()
    eager(x)
    torch.compile(compiled, dynamic=True)(x)
    eager_ulp = _ulp_error(eager.running_var, truth)
    compiled_ulp = _ulp_error(compiled.running_var, truth)
    assert eager_ulp < 1.0, f"eager running_var {eager_ulp:.3g} ulp off"
    assert compiled_ulp > 8.0, (f"compiled running_var now {compiled_ulp:.3g} ulp off (eager {eager_ulp:.3g}): "
                                "fixed? remove the known failure in suite/known_failures/torch.nn.BatchNorm1d.yaml")
