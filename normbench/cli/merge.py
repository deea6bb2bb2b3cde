"""`normbench merge`: combine records from other machines (or runs, or xdist shards) into one results folder.

Idempotent and order-independent: entries are merged one by one (conformance outcomes per implementation) and the
newer measurement wins, so merging the same records again writes nothing. All or nothing: every input is read
and validated and every merged file computed in memory first; a refused input or a record in the target folder
that cannot be read refuses the whole merge, with every problem listed, before anything is written. The writes
then happen under the results folder's lock, so a run storing into it at the same time loses nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VERB = "merge"


def add_parser(sub: argparse._SubParsersAction) -> None:
    from normbench.store.records import DEFAULT_RESULTS_DIR
    parser = sub.add_parser(VERB, help="merge result records from other machines into a results folder")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="a results folder (with raw/), a raw/<machine-id> folder, or a record .json file")
    parser.add_argument("--into", default=DEFAULT_RESULTS_DIR,
                        help=f"results folder to merge into (default: {DEFAULT_RESULTS_DIR})")
    parser.add_argument("--no-render", action="store_true", help="do not re-render the leaderboard")


def _pytest_benchmark_files(source: Path) -> list[tuple[str, Path]]:
    """(machine id, file) of pytest-benchmark JSON kept beside the records."""
    from normbench.store.records import PYTEST_BENCHMARK_DIR

    if (source / "raw").is_dir():
        return [(p.parent.parent.name, p) for p in sorted((source / "raw").glob(f"*/{PYTEST_BENCHMARK_DIR}/*.json"))
                if not p.name.startswith(".")]
    if source.is_dir():
        return [(source.name, p) for p in sorted((source / PYTEST_BENCHMARK_DIR).glob("*.json"))
                if not p.name.startswith(".")]
    return []


def _pytest_benchmark_time(text: str) -> str:
    """When pytest-benchmark wrote this JSON (its own `datetime`); ValueError when it is not such a file."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("datetime"), str):
        raise ValueError("no `datetime` (not pytest-benchmark JSON)")
    return data["datetime"]


def _pytest_benchmark_copies(sources: list[Path], into: Path, errors: list[str]) -> dict[Path, tuple[str, str]]:
    """destination -> (datetime, text) of the newest pytest-benchmark JSON of each machine and device."""
    from normbench.store.records import pytest_benchmark_path

    newest: dict[Path, tuple[str, str]] = {}
    for source in sources:
        for machine, src in _pytest_benchmark_files(source):
            try:
                text = src.read_text(encoding="utf-8")
                when = _pytest_benchmark_time(text)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                errors.append(f"{src}: not readable pytest-benchmark JSON: {exc}")
                continue
            dst = pytest_benchmark_path(into, src.stem, machine)
            if dst not in newest or (when, text) > newest[dst]:
                newest[dst] = (when, text)
    return newest


def _newer_than_target(copies: dict[Path, tuple[str, str]]) -> dict[Path, str]:
    texts = {}
    for dst, (when, text) in copies.items():
        try:
            current = dst.read_text(encoding="utf-8")
            # equal times are broken by content, so the order of merges does not matter
            newer = (when, text) > (_pytest_benchmark_time(current), current)
        except (OSError, ValueError, UnicodeDecodeError):
            newer = True  # absent, or a broken copy that a readable one replaces
        if newer:
            texts[dst] = text
    return texts


def run(args: argparse.Namespace) -> int:
    from normbench.store.errors import ResultsError
    from normbench.store.files import results_lock, write_texts
    from normbench.store.scan import source_files
    from normbench.store.validate import load_record
    from normbench.store.write import changed_texts, merge_into

    into = Path(args.into)
    sources = list(map(Path, args.sources))
    records, errors = [], []
    for source in sources:
        if not source.exists():
            errors.append(f"{source}: no such file or folder")
            continue
        files = source_files(source)
        if not files:
            errors.append(f"{source}: no normbench records found")
        for path in files:
            try:
                records.append(load_record(path))
            except ResultsError as exc:
                errors.append(str(exc))
    copies = _pytest_benchmark_copies(sources, into, errors)
    if not errors:
        # Everything in memory first, without the lock: a problem is found before even the target is created.
        try:
            merge_into(into, records)
        except ResultsError as exc:
            errors += exc.problems
    if errors:
        for error in errors:
            print(f"refused: {error}", file=sys.stderr)
        print("normbench merge: nothing was written (fix or remove the refused inputs)", file=sys.stderr)
        return 1
    try:
        with results_lock(into):
            # again under the lock: the folder may have changed since (a run storing into it)
            merged, total = merge_into(into, records)
            texts = {**changed_texts(merged), **_newer_than_target(copies)}
            try:
                written = write_texts(texts)
            except OSError as exc:
                raise ResultsError(f"{exc.filename or into}: cannot write ({exc.strerror or exc}); nothing was "
                                   "changed") from None
    except ResultsError as exc:
        for problem in exc.problems:
            print(f"refused: {problem}", file=sys.stderr)
        print("normbench merge: nothing was written", file=sys.stderr)
        return 1
    machines = sorted({r["machine_id"] for r in records})
    print(f"merged {len(records)} records from {len(machines)} machine(s) into {into}: {total.added} entries added, "
          f"{total.replaced} replaced by newer measurements, {total.unchanged} unchanged"
          + (f", {total.removed} dropped (a newer run of their implementation did not produce them)"
             if total.removed else ""))
    for path in written:
        print(f"  wrote {path}")
    if not args.no_render:
        from normbench.publish import write_leaderboard

        print(f"leaderboard: {write_leaderboard(into)}")
    return 0
