"""Writing a results folder safely: atomic writes through hidden temporaries, the folder's lock, the fallback file."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from normbench.store.errors import ResultsError
from normbench.store.records import PYTEST_BENCHMARK_DIR, dumps

#: the lock every read-merge-write of a results folder holds: hidden, beside raw/ (not in it, where every entry is a
#: machine's folder), so no record glob matches it
LOCK_FILE = ".normbench.lock"
#: seconds to wait for another writer before giving up (a writer holds the lock for well under a second per record;
#: the lock is an flock, released by the kernel when its holder dies, so a long wait means a live, stuck writer)
LOCK_TIMEOUT_S = 300.0


def _umask() -> int:
    # reading the umask means setting it; it is set back at once (a record is written by one thread)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_new_file(fd: int, text: str) -> None:
    """Fill a file mkstemp created: with the permissions of any file the user writes (mkstemp makes it 0600,
    which would hide a shared results folder's records from the rest of the team), synced to disk."""
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o666 & ~_umask())
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _stage(path: Path, text: str) -> Path:
    """`text` in a hidden temporary beside `path`, named `.<name>.tmp-XXXX` so that no record glob matches it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        _write_new_file(fd, text)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_texts(texts: dict[Path, str]) -> list[Path]:
    """Write every file atomically (a reader never sees half a record): all temporaries first, then the renames,
    so a failure while writing (a full disk) leaves every old file whole. The caller holds `results_lock` (the
    next holder removes any temporary it finds, as a dead writer's)."""
    staged: dict[Path, Path] = {}
    try:
        for path, text in texts.items():
            staged[path] = _stage(path, text)
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)  # only those not renamed are left
    return list(texts)


#: temporaries of this normbench, and the `.tmp-*.json` that older ones left (and that matched the record glob)
_TEMPORARIES = (".*.tmp-*", ".tmp-*.json")


def _remove_stale_temporaries(raw: Path) -> None:
    # Called with the lock held: every writer holds it while its temporaries exist, so any found now belong to a
    # writer that died (SIGKILL, power loss) and would otherwise pile up.
    folders = [raw.parent, raw, *raw.glob("*"), *raw.glob(f"*/{PYTEST_BENCHMARK_DIR}")]
    for folder in folders:
        if folder.is_dir():
            for pattern in _TEMPORARIES:
                for tmp in folder.glob(pattern):
                    tmp.unlink(missing_ok=True)


@contextmanager
def results_lock(results_dir: Path, timeout: float | None = None) -> Iterator[Path]:
    """Hold the results folder's lock (`<results>/.normbench.lock`) for a read-merge-write; yields raw/.
    Not reentrant: an flock is per open file, so a nested lock of the same folder in one process would wait for
    itself."""
    raw = Path(results_dir) / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{raw}: cannot create the results folder ({exc.strerror or exc}); "
                           "pass a writable --results-dir") from None
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    lock_path = Path(results_dir) / LOCK_FILE
    # the lock file, like the records, follows the umask: a team sharing the folder can take it too
    lock = FileLock(lock_path, timeout=timeout, mode=0o666 & ~_umask())
    try:
        lock.acquire()
    except Timeout:
        raise ResultsError(f"{lock_path}: another normbench process has held this lock for {timeout:.0f} s; "
                           "wait for it to finish, or stop it") from None
    except OSError as exc:
        raise ResultsError(f"{lock_path}: cannot take the results lock ({exc.strerror or exc}); "
                           "pass a writable --results-dir") from None
    try:
        _remove_stale_temporaries(raw)
        yield raw
    finally:
        lock.release()


def write_fallback(record: dict[str, Any], directory: Path | None = None) -> Path:
    """Where storing failed after a run: the record in a fresh file of the temporary folder (its name holds the
    UTC time), so no verdict is lost. `normbench merge FILE --into DIR` stores it later."""
    kind = re.sub(r"[^a-z]+", "", str(record.get("kind", "record"))) or "record"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    fd, name = tempfile.mkstemp(prefix=f"normbench-{kind}-{stamp}-", suffix=".json", dir=folder)
    try:
        _write_new_file(fd, dumps(record))
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)

