"""The request protocol changes no verdict: the mutant suites of the checks that now run in the trusted process,
run again with every such item judged through it (NORMBENCH_SELFTEST_REMOTE=1: a loopback server thread stands in
for the plugin's process), flag every planted bug and pass every correct control, as they do beside the plugin.

The whole self-test suite passes the same way (`NORMBENCH_SELFTEST_REMOTE=1 pytest tests`); this test keeps the
suites whose bugs live where the protocol has to be faithful (frozen parameters, dy's layout, in-place writes into
the residual, state moved in forward and in backward, .grad written by a backward, masks, an output
aliasing its input, writes into dy, caches keyed on an input's identity, static output buffers) in every CI run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REMOTE_ENV

# slow (`pytest tests -m slow`, .ci/run): starts a `pytest` session of five mutant modules in a subprocess
pytestmark = pytest.mark.slow

HERE = Path(__file__).parents[1]  # tests/, where the suites below are named from
SUITES = ("checks/test_contexts.py", "checks/test_contexts_masks.py", "checks/test_fused.py",
          "checks/test_stateful.py", "checks/test_honesty.py")


def test_the_mutant_suites_reach_the_same_verdicts_through_the_protocol():
    env = {**os.environ, REMOTE_ENV: "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "-x", *SUITES], cwd=HERE, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
