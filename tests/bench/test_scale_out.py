"""suite/benchmarks/scale_out.py's arithmetic: the nested selections it times and the line it fits (the timings
themselves are a benchmark, run by hand, never a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "suite" / "benchmarks" / "scale_out.py"
_spec = importlib.util.spec_from_file_location("scale_out", SCRIPT)
scale_out = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scale_out)

NAMES = [f"impl{i:02d}" for i in range(42)]


def test_fit_recovers_a_line_and_refuses_a_single_size():
    assert scale_out.fit_line([(1, 12.0), (10, 30.0), (40, 90.0)]) == pytest.approx((10.0, 2.0))
    # least squares, not the two end points: a middle point off the line moves the fit
    fixed, per = scale_out.fit_line([(1, 12.0), (10, 40.0), (40, 90.0)])
    assert per != pytest.approx(2.0) and fixed != pytest.approx(10.0)
    with pytest.raises(ValueError, match="two different sizes"):
        scale_out.fit_line([(10, 30.0), (10, 31.0)])


def test_selections_are_nested_fixed_and_start_with_the_named_one():
    small, large = (scale_out.nested_selection(NAMES, n, first="impl07") for n in (10, 40))
    assert small[0] == "impl07" and large[:10] == small and len(set(large)) == 40
    assert scale_out.nested_selection(NAMES, 40, first="impl07") == large
    # a real shuffle, not the sorted order
    assert small != ["impl07", *sorted(n for n in NAMES if n != "impl07")][:10]


def test_selection_refuses_an_unknown_first_or_too_many():
    with pytest.raises(ValueError, match="nope is not among"):
        scale_out.nested_selection(NAMES, 3, first="nope")
    with pytest.raises(ValueError, match="size 43: there are 42"):
        scale_out.nested_selection(NAMES, 43, first="impl00")


def test_command_is_the_suite_with_every_implementation_named():
    cmd = scale_out.suite_command(["a", "b"])
    assert " ".join(cmd[1:]) == "-m pytest suite -n 2 --no-record -q --impl a --impl b"
