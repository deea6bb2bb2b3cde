"""The tolerance comparison every check relies on: bounds, the worst element, and non-finite values."""

from __future__ import annotations

import math

import torch

from normbench.compare import compare
from normbench.spec import Tolerance

TOL = Tolerance(rel=2, abs=1, red=0)
EPS32 = torch.finfo(torch.float32).eps


def test_error_within_the_bound_passes_and_is_measured():
    truth = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    actual = truth + torch.tensor([0.0, 0.0, 4 * EPS32], dtype=torch.float64)  # bound at 4: eps*(2*4 + 1*4)
    c = compare(actual, truth, torch.float32, TOL, 3)
    assert c.ok and c.nonfinite == 0
    assert c.worst_index == (2,) and math.isclose(c.max_abs, 4 * EPS32)
    assert math.isclose(c.tol_ratio, 4 / 12) and math.isclose(c.max_rel, EPS32)


def test_error_beyond_the_bound_fails_at_the_worst_element():
    truth = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    actual = truth.clone()
    actual[1, 0] += 10 * EPS32  # bound eps*(2 + 1) = 3 eps
    c = compare(actual, truth, torch.float32, TOL, 2)
    assert not c.ok and c.worst_index == (1, 0) and math.isclose(c.tol_ratio, 10 / 3)
    assert c.actual_at_worst == float(actual[1, 0]) and c.truth_at_worst == 1.0


def test_nan_where_the_truth_is_finite_is_an_infinite_error():
    truth = torch.tensor([1.0, 2.0], dtype=torch.float64)
    actual = torch.tensor([1.0, math.nan], dtype=torch.float64)
    c = compare(actual, truth, torch.float32, TOL, 2)
    assert not c.ok and c.nonfinite == 1 and c.max_abs == math.inf and c.worst_index == (1,)


def test_matching_infinities_are_not_errors_and_mismatched_ones_are():
    truth = torch.tensor([math.inf, 1.0], dtype=torch.float64)
    assert compare(truth.clone(), truth, torch.float32, TOL, 2).ok
    c = compare(torch.tensor([1.0, 1.0], dtype=torch.float64), truth, torch.float32, TOL, 2)
    assert not c.ok and c.nonfinite == 1
