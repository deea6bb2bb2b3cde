"""`normbench merge`: combine records from other machines (or runs, or xdist shards) into one results folder.

Idempotent and order-independent: entries are merged one by one and the newer measurement wins, so merging the
same records again writes nothing. A record of an unknown api_version refuses the whole merge, before anything
is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

VERB = "merge"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(VERB, help="merge result records from other machines into a results folder")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="a results folder (with raw/), a raw/<machine-id> folder, or a record .json file")
    parser.add_argument("--into", default="results", help="results folder to merge into (default: results)")
    parser.add_argument("--no-render", action="store_true", help="do not re-render the leaderboard")


def _record_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if (source / "raw").is_dir():
        return sorted((source / "raw").glob("*/*.json"))
    return sorted(source.glob("*.json"))


def _pytest_benchmark_files(source: Path) -> list[tuple[str, Path]]:
    """(machine id, file) of pytest-benchmark JSON kept beside the records."""
    from normbench.results import PYTEST_BENCHMARK_DIR

    if (source / "raw").is_dir():
        return [(p.parent.parent.name, p) for p in sorted((source / "raw").glob(f"*/{PYTEST_BENCHMARK_DIR}/*.json"))]
    if source.is_dir():
        return [(source.name, p) for p in sorted((source / PYTEST_BENCHMARK_DIR).glob("*.json"))]
    return []


def _newer_pytest_benchmark(src: Path, dst: Path) -> bool:
    if not dst.exists():
        return True
    try:
        return json.loads(src.read_text())["datetime"] > json.loads(dst.read_text())["datetime"]
    except (OSError, ValueError, KeyError):
        return False


def run(args: argparse.Namespace) -> int:
    from normbench.results import MergeStats, ResultsError, load_record, pytest_benchmark_path, store_record

    into = Path(args.into)
    records, errors = [], []
    for source in map(Path, args.sources):
        if not source.exists():
            errors.append(f"{source}: no such file or folder")
            continue
        files = _record_files(source)
        if not files:
            errors.append(f"{source}: no normbench records found")
        for path in files:
            try:
                records.append(load_record(path))
            except ResultsError as exc:
                errors.append(str(exc))
    if errors:
        for error in errors:
            print(f"refused: {error}", file=sys.stderr)
        print("normbench merge: nothing was written (fix or remove the refused inputs)", file=sys.stderr)
        return 1
    total = MergeStats()
    for record in records:
        _, stats = store_record(into, record)
        total += stats
    copied = []
    for source in map(Path, args.sources):
        for machine, src in _pytest_benchmark_files(source):
            dst = pytest_benchmark_path(into, src.stem, machine)
            if src.resolve() != dst.resolve() and _newer_pytest_benchmark(src, dst):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                copied.append(dst)
    machines = sorted({r["machine_id"] for r in records})
    print(f"merged {len(records)} records from {len(machines)} machine(s) into {into}: {total.added} entries added, "
          f"{total.replaced} replaced by newer measurements, {total.unchanged} unchanged")
    for path in [*total.files, *map(str, copied)]:
        print(f"  wrote {path}")
    if not args.no_render:
        from normbench.leaderboard import write_leaderboard

        print(f"leaderboard: {write_leaderboard(into)}")
    return 0
