"""`pytest suite` in a subprocess, as a user starts it from the clone: a test that calls `run_suite` is slow
(tests/test_slow_marker.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: the clone's root, where `pytest suite` runs
ROOT = Path(__file__).resolve().parent.parent.parent


def run_suite(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`pytest suite *args` from the clone's root, with tests/ importable (its plugins/ are what --impl-path names)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-rA",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
