"""`normbench test [pytest args...]`: the conformance suite, from any folder: `pytest --pyargs normbench.suite ...`.

A thin wrapper, nothing more: every argument goes to pytest as given (normbench's options, `--impl`, `--impl-path`,
`--results-dir`, `--no-record`, ..., and pytest's own, `-k`, `-q`, `-n 2`), and its exit status is pytest's. Results go
to ./normbench-results unless `--results-dir` is given; `normbench test -h` is pytest's help, normbench's options
included. pytest-benchmark is left out (`-p no:benchmark`, as `normbench run` does): the suite times nothing, and the
plugin would leave an empty ./.benchmarks in the folder.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from normbench_forkserver import SUITE_PACKAGE

VERB = "test"
#: every argument after the verb is pytest's (normbench.cli.main)
PASSES_UNKNOWN_ARGS = True


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(VERB, add_help=False, usage="normbench test [pytest args...]",
                   help="run the conformance suite from any folder (pytest --pyargs normbench.suite ARGS...)")


def pytest_command(passthrough: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "--pyargs", SUITE_PACKAGE, "-p", "no:benchmark", *passthrough]


def run(args: argparse.Namespace) -> int:
    cmd = pytest_command(args.passthrough)
    print(f"$ {shlex.join(['pytest', *cmd[3:]])}", flush=True)
    return subprocess.run(cmd).returncode
