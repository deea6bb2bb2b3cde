"""Not collected by `pytest tests` (no test_ prefix): tests/test_xdist_groups.py runs it under `-n 2` by path. Its
module-scoped fixture writes one line to $XDIST_GROUP_PROBE_LOG per setup, with the worker that set it up."""

import os

import pytest


@pytest.fixture(scope="module", params=["a", "b"])
def shared(request):
    with open(os.environ["XDIST_GROUP_PROBE_LOG"], "a") as fh:
        fh.write(f"{request.param} {os.environ.get('PYTEST_XDIST_WORKER', 'none')}\n")
    return request.param


@pytest.mark.parametrize("n", range(6))
def test_reads_the_shared_run(shared, n):
    assert shared in ("a", "b")


@pytest.mark.parametrize("n", range(6))
def test_alone(n):
    assert n >= 0
