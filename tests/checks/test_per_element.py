"""`per_element` spreads one value per statistic group over the elements that share it: the inverse of
`statistic_groups`, checked against the rearrangement applied to the elements' own flat indices (how the
conditioning allowance of forward_equivalence found each element's group before)."""

from __future__ import annotations

import pytest
import torch
from helpers import specs

from normbench.checks.toolkit.reductions import per_element, statistic_groups


def _by_index(spec, shape, values, params):
    index = statistic_groups(spec, torch.arange(torch.Size(shape).numel(), dtype=torch.float64).reshape(shape), params)
    out = torch.empty(index.numel(), dtype=torch.float64)
    out[index.reshape(-1).long()] = values.unsqueeze(1).expand_as(index).reshape(-1)
    return out.reshape(shape)


def _cases():
    for family, spec in sorted(specs().items()):
        axis = spec.layout.features_axis
        for rest in ((5,), (3, 4), (2, 3, 2)):
            shape = [*rest]
            shape.insert(len(shape) + 1 + axis if axis < 0 else axis, 6)
            if spec.layout.reduce in ("group", "instance") and len(shape) < 3:
                continue
            for groups in ((1, 2, 3, 6) if spec.layout.reduce == "group" else (None,)):
                yield pytest.param(family, tuple(shape), groups, id=f"{family}-{shape}-{groups}")


@pytest.mark.parametrize(("family", "shape", "groups"), list(_cases()))
def test_per_element_is_the_inverse_of_statistic_groups(family, shape, groups):
    spec = specs()[family]
    params = {} if groups is None else {"num_groups": groups}
    rows = statistic_groups(spec, torch.zeros(shape, dtype=torch.float64), params).shape[0]
    values = torch.randn(rows, dtype=torch.float64)
    spread = per_element(spec, shape, values, params)
    assert spread.is_contiguous() and spread.shape == shape
    assert torch.equal(spread, _by_index(spec, shape, values, params))


def test_a_wrong_inverse_is_caught():
    spec = specs()["groupnorm"]
    shape, params = (2, 6, 3), {"num_groups": 3}
    values = torch.arange(6, dtype=torch.float64)
    swapped = per_element(spec, shape, values.reshape(2, 3).T.reshape(-1), params)  # groups read batch-first
    assert not torch.equal(swapped, _by_index(spec, shape, values, params))
