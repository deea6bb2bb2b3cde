"""Judging processes share one string-hash secret (normbench_forkserver.JUDGING_HASH_SEED), so a verdict that hangs
on the order of a set of strings is the same on every run; a PYTHONHASHSEED the user set is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from normbench_forkserver import JUDGING_HASH_SEED

TESTS = Path(__file__).parent

#: a fresh process (a forkserver of its own, which inherits the environment only when it starts): the hash the
#: judging process saw, and whether the pinned seed leaked into this process's environment
DISCOVER = """
import os
from normbench.sandbox import discover_isolated
from normbench.spec import load_specs
registry = discover_isolated(["plugins.hash_order:reports_its_hash"], families=load_specs().specs,
                             include_entry_points=False)
print(registry.implementations["hash_order.reports_its_hash"].description)
print(os.environ.get("PYTHONHASHSEED"))
"""


def _run(code: str, seed: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    if seed is not None:
        env["PYTHONHASHSEED"] = seed
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=TESTS,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def _hash_under(seed: str) -> str:
    return _run('print(hash("normbench"))', seed)[0]


@pytest.mark.slow
def test_every_run_judges_under_one_hash_secret_and_a_users_seed_is_kept():
    pinned = _hash_under(JUDGING_HASH_SEED)
    assert pinned != _hash_under("7")  # the two seeds below are told apart
    # two runs with randomization on: each pytest process has its own secret, its judging processes the pinned one
    assert _run(DISCOVER, None) == _run(DISCOVER, None) == [pinned, "None"]
    assert _run(DISCOVER, "7") == [_hash_under("7"), "7"]
