"""Finding the records of a results folder: every record file, the files a command-line argument names, every
readable record with a refusal for each other file, and the check a run makes of its folder before judging."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from normbench.store.errors import ForgedRecord, ResultsError, move_away
from normbench.store.validate import load_record


def validate_results_dir(results_dir: Path) -> None:
    """Before a run judges anything: the folder (and raw/ in it) can be created and written, and every record
    already in it can be read by this normbench. Raises ResultsError with the path and the fix. Creates raw/."""
    results = Path(results_dir)
    raw = results / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        # permission bits do not tell (root, read-only mounts, ACLs): only creating a file does
        for folder in [results, raw, *(p for p in raw.iterdir() if p.is_dir())]:
            fd, probe = tempfile.mkstemp(prefix=".normbench-probe.tmp-", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        where = exc.filename or raw
        raise ResultsError(f"{results}: cannot write results here ({where}: {exc.strerror or exc}); pass a "
                           "writable --results-dir, or make this folder writable") from None
    problems = []
    for path in record_files(results):
        try:
            load_record(path)
        except ResultsError as exc:
            problems.append(f"{exc}; {move_away(path)}")
    if problems:
        raise ResultsError(f"{results}: {len(problems)} record(s) this normbench cannot read (a run would not "
                           "be able to store its verdicts): " + "; ".join(problems), problems=problems)


def _visible(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if not p.name.startswith(".") and not p.parent.name.startswith("."))


def record_files(results_dir: Path) -> list[Path]:
    """Every record file under results_dir/raw/<machine-id>/ (pytest-benchmark's own JSON lives a level deeper;
    hidden files, such as a killed writer's temporaries, are no records)."""
    return _visible((Path(results_dir) / "raw").glob("*/*.json"))


def source_files(source: Path, pattern: str = "*.json") -> list[Path]:
    """The record files a command-line argument names: a record file itself, a results folder (with raw/), or a
    raw/<machine-id> folder. `pattern` narrows the file names (e.g. "benchmark-*.json")."""
    source = Path(source)
    if source.is_file():
        return [source]
    if (source / "raw").is_dir():
        return _visible((source / "raw").glob(f"*/{pattern}"))
    return _visible(source.glob(pattern))


def scan_records(results_dir: Path, sealed: dict[Path, bytes] | None = None
                 ) -> tuple[list[dict[str, Any]], list[ResultsError]]:
    """Every readable record, and a refusal (with its message) for every file that is not one. `sealed` maps the
    records this run wrote to its key: each of them must match its seal (else a ForgedRecord refusal)."""
    records, errors = [], []
    keys = {Path(p).resolve(): key for p, key in (sealed or {}).items()}
    for path in record_files(results_dir):
        try:
            records.append(load_record(path, keys.get(path.resolve())))
        except ResultsError as exc:
            errors.append(exc)
    found = {path.resolve() for path in record_files(results_dir)}
    errors += [ForgedRecord(f"{path}: this run wrote and sealed this record, and it is gone (removed after the "
                            "run wrote it)") for path in keys if path not in found]
    return records, errors

