"""`normbench compare OLD NEW --fail-above 5%`: the regression gate."""

from __future__ import annotations

import argparse

import pytest
from factories.records import case, on_machine

from normbench.cli.compare import threshold
from normbench.cli.main import main
from normbench.store.records import benchmark_record
from normbench.store.write import store_record


def results(tmp_path, name, medians, machine="m1"):
    folder = tmp_path / name
    entries = [case(impl, median, 50.0) for impl, median in medians.items()]
    store_record(folder, on_machine(benchmark_record("cpu", entries, {"copy_gbps": 10.0}, 1), machine))
    return folder


def test_a_regression_above_the_threshold_fails(tmp_path, capsys):
    old = results(tmp_path, "old", {"a": 1e-3, "b": 1e-3})
    new = results(tmp_path, "new", {"a": 1.10e-3, "b": 1.01e-3})
    assert main(["compare", str(old), str(new), "--fail-above", "5%"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "+10.0%" in out and "1 regression(s)" in out
    # q1 = q3 = median in these records: only b's 1% change is not inside the other's (empty) IQR either
    assert "reproducibility: 0 of 2 medians lie within the other run's IQR; median |change| 10.0%" in out
    assert main(["compare", str(old), str(new), "--fail-above", "15%"]) == 0


def test_faster_is_not_a_regression(tmp_path, capsys):
    old = results(tmp_path, "old", {"a": 1e-3})
    new = results(tmp_path, "new", {"a": 0.5e-3})
    assert main(["compare", str(old), str(new), "--fail-above", "5%", "--all"]) == 0
    assert "faster" in capsys.readouterr().out


def test_other_machine_is_said_and_nothing_in_common_is_an_error(tmp_path, capsys):
    old = results(tmp_path, "old", {"a": 1e-3}, machine="m1")
    new = results(tmp_path, "new", {"a": 1e-3}, machine="m2")
    assert main(["compare", str(old), str(new)]) == 0
    assert "DIFFERENT machines" in capsys.readouterr().out
    other = results(tmp_path, "other", {"z": 1e-3}, machine="m1")
    assert main(["compare", str(old), str(other)]) == 2


def test_threshold_parsing():
    assert threshold("5%") == threshold("5") == threshold("0.05") == pytest.approx(0.05)
    with pytest.raises(argparse.ArgumentTypeError):
        threshold("five")
