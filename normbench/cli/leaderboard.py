"""`normbench leaderboard`: render results/raw/ into LEADERBOARD.md, .html, csv/ and plots/ (a pure function)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

VERB = "leaderboard"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from normbench.publish import format_names
    from normbench.store.records import DEFAULT_RESULTS_DIR

    parser = sub.add_parser(VERB, help="render the leaderboard from the stored records")
    parser.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                        help=f"results folder (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--format", action="append", choices=format_names(), dest="formats",
                        help=f"only this output format (repeatable; default: {', '.join(format_names(True))})")
    parser.add_argument("--show", action="store_true", help="also print the combined ranking")


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from normbench.board.build import read_leaderboard
    from normbench.publish import publish_all
    from normbench.publish._format import rows_text

    results = Path(args.results_dir)
    if not (results / "raw").is_dir():
        print(f"normbench leaderboard: no records under {results / 'raw'} (run `normbench run` first)",
              file=sys.stderr)
        return 2
    board, errors = read_leaderboard(results)
    for path in publish_all(board, results, args.formats):
        print(f"wrote {path}")
    if args.show:
        ranking = board.table("ranking")
        print(tabulate(rows_text(ranking), headers=ranking.headers, disable_numparse=True))
    for error in errors:
        print(f"refused: {error}", file=sys.stderr)
    return 1 if errors else 0
