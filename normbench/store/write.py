"""Storing records into a results folder: merged with what it holds, under its lock, sealed, written atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from normbench.store.errors import ResultsError, move_away
from normbench.store.files import results_lock, write_texts
from normbench.store.merge import MergeStats, as_first, merge_records
from normbench.store.records import ENTRIES, dumps, record_path
from normbench.store.seal import seal_path, seal_text
from normbench.store.validate import load_record, validate_record


def merge_into(results_dir: Path, records: Iterable[dict[str, Any]]) -> tuple[dict[Path, dict[str, Any]],
                                                                               MergeStats]:
    """Every record file that `records` go to, merged with what the folder holds, in memory: nothing is written.
    Every problem (a record to refuse, an unreadable file in the folder) is raised at once, in one ResultsError.
    Hold `results_lock` when the result is to be written."""
    merged: dict[Path, dict[str, Any]] = {}
    stats, errors = MergeStats(), []
    for record in records:
        try:
            record = validate_record(record, "record to store")
            path = record_path(results_dir, record)
            if path not in merged and path.exists():
                try:
                    merged[path] = load_record(path)
                except ResultsError as exc:
                    raise ResultsError(f"{exc}; {move_away(path)}") from None
            if path in merged:
                merged[path], more = merge_records(merged[path], record)
                stats += more
            else:
                merged[path] = as_first(record)
                stats.added += len(record[ENTRIES[record["kind"]]])
        except ResultsError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
    if errors:
        raise ResultsError("; ".join(errors), problems=errors)
    return merged, stats


def changed_texts(merged: dict[Path, dict[str, Any]], key: bytes | None = None) -> dict[Path, str]:
    """The files whose content would change (storing the same record again writes nothing). With a run's `key`,
    every record's seal too (normbench.store.seal): a record left unchanged is sealed by this run all the same."""
    texts = {path: dumps(data) for path, data in merged.items()}
    changed = {path: text for path, text in texts.items()
               if not path.exists() or path.read_text(encoding="utf-8") != text}
    if key is not None:
        changed.update({seal_path(path): seal_text(key, path, text) for path, text in texts.items()})
    return changed


def _drop_seals(paths: Iterable[Path]) -> None:
    # A record rewritten without a key (normbench merge, a benchmark session) is no longer what an older seal says.
    for path in paths:
        seal_path(path).unlink(missing_ok=True)


def store_records(results_dir: Path, records: Iterable[dict[str, Any]],
                  key: bytes | None = None) -> tuple[list[Path], MergeStats]:
    """Merge every record into this folder (one file per machine and kind, created when absent), under the
    folder's lock, atomically. Returns the record files they went to. With a run's `key`, each record gets a seal
    beside it (normbench.store.seal) that `load_record(path, key)` checks. Raises ResultsError naming the file
    and the fix; nothing is written then."""
    records = list(records)
    with results_lock(results_dir):
        merged, stats = merge_into(Path(results_dir), records)
        try:
            texts = changed_texts(merged, key)
            if key is None:
                _drop_seals(texts)
            written = [p for p in write_texts(texts) if p in merged]
        except OSError as exc:
            raise ResultsError(f"{exc.filename or results_dir}: cannot write the record ({exc.strerror or exc}); "
                               "pass a writable --results-dir") from None
    stats.files += map(str, written)
    return list(merged), stats


def store_record(results_dir: Path, record: dict[str, Any], key: bytes | None = None) -> tuple[Path, MergeStats]:
    """Merge `record` into this machine's file of its kind (created when absent), under the lock, atomically."""
    paths, stats = store_records(results_dir, [record], key)
    return paths[0], stats


def store_conformance(results_dir: Path, record: dict[str, Any], key: bytes | None = None) -> Path:
    """Store a conformance record (each implementation it names replaces that implementation's older outcomes);
    returns the file, sealed with the run's `key` when given. Rendering is the caller's:
    `normbench.publish.write_leaderboard(results_dir)`."""
    if record.get("kind") != "conformance":
        raise ResultsError(f"store_conformance: a conformance record is expected, not {record.get('kind')!r}")
    path, _ = store_record(Path(results_dir), record, key)
    return path


