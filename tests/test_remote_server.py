"""The plugin-side server's own helpers (normbench.remote.server), on the values that reach them."""

import pytest
import torch

from normbench.remote.server import _same


@pytest.mark.parametrize("before, after, same", [
    (torch.tensor(1.0), torch.tensor(2.0), False),  # a scalar parameter (DyT's alpha) after an optimizer step
    (torch.tensor(float("nan")), torch.tensor(float("nan")), True),  # NaN equals NaN bitwise
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]), True),
    (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]), False),
])
def test_same_compares_every_shape_bitwise_a_scalar_too(before, after, same):
    assert _same(after, (id(after), before)) is same


def test_same_is_false_for_another_tensor_object_with_equal_values():
    held = torch.ones(3)
    assert not _same(torch.ones(3), (id(held), held))
