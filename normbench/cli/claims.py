"""`normbench claims`: re-measure published norm speed / memory claims here, record them, re-render the leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tabulate import tabulate

VERB = "claims"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from normbench import deploy
    from normbench.claims.registry import CLAIMS, TRAINING_CLAIMS
    from normbench.store.records import DEFAULT_RESULTS_DIR

    parser = sub.add_parser(VERB, help="the claims lab: RMSNorm vs LayerNorm, folded offline norm vs LayerNorm, per "
                                       "deployment variant; training dynamics (PowerNorm, Pre/Post-LN, DeepNorm)")
    parser.add_argument("--only", action="append", choices=sorted(CLAIMS), help="run only this claim (repeatable)")
    parser.add_argument("--variant", action="append", default=[], choices=deploy.names(aliases=True),
                        help="measure the speed claims as deployed this way (repeatable; default eager only): "
                             "compile = torch.compile (Inductor), export (or its older name onnxruntime) = "
                             "torch.onnx export on ONNX Runtime")
    parser.add_argument("--training", action="store_true",
                        help=f"also run the training-dynamics claims ({', '.join(TRAINING_CLAIMS)}): small seeded "
                             "models trained on the CPU for a few minutes; --only runs one of them without it")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"],
                        help="device to measure on (default: cuda where available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    parser.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                        help=f"results folder (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--no-record", action="store_true", help="print only; write no record")


def run(args: argparse.Namespace) -> int:
    from normbench.bench.allocator import pin_malloc
    from normbench.bench.roofline import cpu_threads_available
    from normbench.claims.registry import run_claims
    from normbench.publish import write_leaderboard
    from normbench.store.records import claims_record
    from normbench.store.write import store_record

    if args.device == "cuda" and not torch.cuda.is_available():
        print("normbench claims: --device cuda, but torch sees no CUDA device here")
        return 2
    torch.set_num_threads(args.threads or cpu_threads_available())
    # the allocator's steady state, as the benchmarks time it (normbench.bench.allocator)
    malloc = pin_malloc()
    print(f"claims lab on {args.device} ({torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"malloc: {malloc}) ...")
    from normbench import deploy

    variants = tuple(dict.fromkeys(deploy.canonical(v) for v in getattr(args, "variant", None) or ()))
    variants = variants or (deploy.DEFAULT.name,)
    results = run_claims(args.device, args.only, variants, getattr(args, "training", False))
    print(tabulate([[r.id, r.measured, r.verdict] for r in results], headers=["claim", "measured here", "verdict"],
                   maxcolwidths=[None, 90, 30]))
    if not args.no_record:
        path, _ = store_record(Path(args.results_dir), claims_record([r.as_dict() for r in results]))
        board = write_leaderboard(Path(args.results_dir))
        print(f"recorded in {path}; leaderboard {board}")
    return 0
