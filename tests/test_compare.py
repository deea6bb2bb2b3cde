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


def test_ulp_is_measured_at_the_outputs_scale_not_at_a_near_zero_element():
    # once a passing bfloat16 item read "max ulp 3.19e37", a float32 one 260911 ulp: the error of an output
    # near zero divided by that element's own (tiny) spacing. At the output's scale S = max|t| it is a few ulp.
    for dtype, near_zero in ((torch.bfloat16, 0.0), (torch.float32, 1e-12)):
        eps = torch.finfo(dtype).eps
        truth = torch.tensor([1.5, -1.0, near_zero], dtype=torch.float64)
        actual = truth + torch.tensor([0.0, 0.0, 2 * eps], dtype=torch.float64)  # 2 ulp of S = 1.5 (spacing eps)
        c = compare(actual, truth, dtype, Tolerance(rel=2, abs=4, red=0), 3)
        assert c.ok and c.ulp_scale == 1.5 and math.isclose(c.max_ulp, 2.0), (dtype, c.max_ulp)
        assert c.max_rel > 1  # the relative error keeps its element-wise meaning
        assert "2 ulp of the scale 1.5" in c.describe("output")


def test_ulp_of_a_reduction_is_at_the_size_of_what_it_sums():
    from normbench.compare import TermScale

    truth = torch.tensor([0.0, 0.25], dtype=torch.float64)  # a sum that cancelled
    terms = TermScale(abs_sum=torch.tensor([64.0, 64.0], dtype=torch.float64),
                      root_sum_square=torch.tensor([8.0, 8.0], dtype=torch.float64))
    actual = truth + torch.tensor([8 * EPS32, 0.0], dtype=torch.float64)
    c = compare(actual, truth, torch.float32, Tolerance(rel=2, abs=1, red=1), 1, terms=terms)
    assert c.ulp_scale == 8.0 and math.isclose(c.max_ulp, 1.0)  # spacing at 8 is 8 eps


def test_unravel_matches_torch():
    from normbench.compare import unravel

    for shape in [(3,), (2, 3), (4, 1, 5), (2, 3, 4, 5)]:
        for flat in range(torch.Size(shape).numel()):
            assert unravel(flat, shape) == tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape))
