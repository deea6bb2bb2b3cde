"""The bytes model: compulsory traffic per pass, parameters and running statistics included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normbench.bench.bytes_model import bytes_moved, copy_bytes


@pytest.mark.parametrize(("pass_name", "x_factor", "param_factor"),
                         [("forward", 2, 1), ("backward", 3, 2), ("forward+backward", 5, 3), ("inference", 2, 1)])
def test_layernorm_traffic(pass_name, x_factor, param_factor):
    x = torch.empty(16, 64)
    module = nn.LayerNorm(64)
    traffic = bytes_moved(x, module, pass_name)
    assert traffic.x_bytes == x_factor * 16 * 64 * 4
    assert traffic.param_bytes == param_factor * 2 * 64 * 4
    assert traffic.state_bytes == 0
    assert traffic.total == traffic.x_bytes + traffic.param_bytes


def test_running_statistics_count_and_halves_halve():
    x = torch.empty(8, 32, 10, dtype=torch.bfloat16)
    module = nn.BatchNorm1d(32).to(torch.bfloat16)
    train = bytes_moved(x, module, "forward")
    assert train.x_bytes == 2 * x.numel() * 2
    assert train.state_bytes == 2 * 2 * 32 * 2  # running mean and var, read and written (the int counter is not)
    assert bytes_moved(x, module, "inference").state_bytes == 2 * 32 * 2
    assert bytes_moved(x, module, "backward").state_bytes == 0


def test_copy_and_unknown_pass():
    x = torch.empty(1000)
    assert copy_bytes(x) == 8000 == bytes_moved(x, None, "forward").total
    with pytest.raises(ValueError, match="unknown pass"):
        bytes_moved(x, None, "sideways")
