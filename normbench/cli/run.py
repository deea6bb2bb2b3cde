"""`normbench run`: the conformance suite, then the throughput benchmarks, then the claims lab (results: --results-dir).

Each stage is the same pytest run a user can start by hand (printed before it starts), so nothing here is a
second way of judging or timing: conformance is `pytest suite` (parallel with xdist), the benchmarks are
`pytest -p normbench.bench.pytest_plugin suite/benchmarks` (serial, one pytest session per device, with a
progress bar and pytest-benchmark's JSON kept under results/raw/<machine-id>/pytest-benchmark/).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

VERB = "run"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from normbench import deploy
    from normbench.bench.harness import PASSES
    from normbench.implementation import ALL_DTYPES
    from normbench.store.records import DEFAULT_RESULTS_DIR

    parser = sub.add_parser(VERB, help="conformance, then benchmarks, then the claims lab; writes the results and "
                                       "the leaderboard")
    parser.add_argument("--impl", action="append", default=[], metavar="NAME", help="only this implementation")
    parser.add_argument("--impl-path", action="append", default=[], metavar="MODULE:ATTR",
                        help="also an implementation that is not installed")
    parser.add_argument("--family", action="append", default=[], metavar="FAMILY", help="only this family")
    parser.add_argument("--dtype", action="append", default=[], choices=list(ALL_DTYPES),
                        help="benchmark only this dtype")
    parser.add_argument("--pass", action="append", default=[], choices=list(PASSES), dest="passes",
                        help="benchmark only this pass")
    parser.add_argument("--shape", action="append", default=[], metavar="AxB",
                        help="benchmark these shapes instead of the specs'")
    parser.add_argument("--device", action="append", default=[], choices=["cpu", "cuda"],
                        help="devices (default: cpu, plus cuda where available)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the CPU benchmarks "
                                                                  "(default: every core)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS", help="timing budget per case")
    parser.add_argument("--rounds", type=int, default=3, metavar="R",
                        help="interleaved passes over every benchmark case, samples pooled (default 3)")
    parser.add_argument("--include-references", action="store_true", help="also time the float64 references")
    parser.add_argument("--variant", action="append", default=[], choices=deploy.names(aliases=True),
                        help="benchmark every case as deployed this way (repeatable, e.g. --variant eager "
                             "--variant compile; default eager only; onnxruntime is export's older name)")
    parser.add_argument("--omp-wait-policy", default="passive", choices=["passive", "active", "inherit"],
                        help="OMP_WAIT_POLICY of the benchmark process (default passive: on a shared CPU, "
                             "spinning OpenMP threads make 2-thread timings bimodal; inherit = leave the "
                             "environment as it is)")
    parser.add_argument("--crosscheck", action="store_true",
                        help="also time every case with torch.utils.benchmark and record both medians")
    parser.add_argument("--workers", "-n", default="2", metavar="N",
                        help="pytest-xdist workers for conformance (default 2; 0 = serial); benchmarks are serial")
    parser.add_argument("--profile", default=None, help="hypothesis profile for conformance (ci, dev, thorough)")
    parser.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                        help=f"results folder (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--suite", default=None, help="the suite folder (default: ./suite, else the one beside the "
                                                      "normbench sources)")
    for stage in ("conformance", "benchmarks", "claims"):
        parser.add_argument(f"--skip-{stage}", action="store_true", help=f"do not run the {stage}")


def _suite_dir(given: str | None) -> Path:
    candidates = [Path(given)] if given else [Path("suite"), Path(__file__).resolve().parents[2] / "suite"]
    for path in candidates:
        if (path / "conformance.py").is_file():
            return path.resolve()
    raise SystemExit(f"normbench run: no suite folder with conformance.py at {', '.join(map(str, candidates))} "
                     "(run from the repository root or pass --suite)")


def _selected_impls(args: argparse.Namespace) -> list[str]:
    """--impl, plus every implementation of the --family ones (the conformance plugin narrows by name)."""
    if not args.family:
        return list(args.impl)
    from normbench.sandbox import discover_isolated
    from normbench.spec import load_specs

    specs = load_specs(known_checks=None).specs
    registry = discover_isolated(args.impl_path, families=specs)
    names = [i.name for i in registry.implementations.values() if i.family in args.family]
    return [n for n in names if not args.impl or n in args.impl]


def _pytest(argv: list[str], cwd: Path) -> int:
    cmd = [sys.executable, "-m", "pytest", *argv]
    policy = os.environ.get("OMP_WAIT_POLICY")
    print(f"\n$ {f'OMP_WAIT_POLICY={policy} ' if policy else ''}{shlex.join(['pytest', *argv])}", flush=True)
    return subprocess.run(cmd, cwd=cwd).returncode


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the child processes started inside, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(args: argparse.Namespace) -> int:
    from normbench.store.machine import machine_id
    from normbench.store.records import pytest_benchmark_path

    suite = _suite_dir(args.suite)
    root = suite.parent
    results = Path(args.results_dir).resolve()
    impls = _selected_impls(args)
    if args.family and not impls:
        print(f"normbench run: no implementation in families {args.family}", file=sys.stderr)
        return 2
    common = [f"--impl={name}" for name in impls] + [f"--impl-path={p}" for p in args.impl_path]
    common += [f"--results-dir={results}", "-p", "no:cacheprovider"]
    codes = {}
    if not args.skip_conformance:
        # pytest-benchmark is not needed here, and under xdist it warns that it would be disabled
        conformance = [str(suite / "conformance.py"), "-q", "-p", "no:benchmark", *common]
        if args.workers not in ("0", "1"):
            conformance += ["-n", args.workers]
        if args.profile:
            conformance.append(f"--profile={args.profile}")
        codes["conformance"] = _pytest(conformance, root)
    if not args.skip_benchmarks:
        devices = args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
        for device in devices:
            json_path = pytest_benchmark_path(results, device, machine_id())
            json_path.parent.mkdir(parents=True, exist_ok=True)
            bench = [str(suite / "benchmarks"), "-p", "normbench.bench.pytest_plugin", "-q", *common,
                     f"--device={device}", "--bench-progress", "--benchmark-quiet", f"--benchmark-json={json_path}"]
            bench += [f"--bench-family={f}" for f in args.family] + [f"--bench-dtype={d}" for d in args.dtype]
            bench += [f"--bench-pass={p}" for p in args.passes] + [f"--bench-shape={s}" for s in args.shape]
            if args.threads:
                bench.append(f"--bench-threads={args.threads}")
            if args.budget:
                bench.append(f"--bench-budget={args.budget}")
            bench.append(f"--bench-rounds={args.rounds}")
            if args.include_references:
                bench.append("--bench-include-references")
            if args.crosscheck:
                bench.append("--bench-crosscheck")
            bench += [f"--bench-variant={v}" for v in args.variant]
            # libgomp reads OMP_WAIT_POLICY once, when torch loads: it must be in the child's environment
            env = {} if args.omp_wait_policy == "inherit" else {"OMP_WAIT_POLICY": args.omp_wait_policy.upper()}
            with _environment(**env):
                codes[f"benchmarks ({device})"] = _pytest(bench, root)
    if not args.skip_claims:
        from normbench.cli import claims

        device = "cuda" if torch.cuda.is_available() and (not args.device or "cuda" in args.device) else "cpu"
        print("\n$ normbench claims", flush=True)
        codes["claims"] = claims.run(argparse.Namespace(only=None, device=device, threads=args.threads,
                                                        results_dir=str(results), no_record=False,
                                                        variant=args.variant, training=False))
    print("\nnormbench run: " + ", ".join(f"{stage} {'ok' if code == 0 else f'exit {code}'}"
                                          for stage, code in codes.items()))
    print(f"leaderboard: {results / 'LEADERBOARD.md'}")
    return max(codes.values(), default=0)
