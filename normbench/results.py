"""Results store: schema-versioned JSON records under results/raw/<machine-id>/, written atomically.

asv's lesson: every record carries an `api_version`; a record of another version (or of a kind this normbench
does not know) is refused with a message, never misread. One file per machine and kind:

    results/raw/<machine-id>/conformance.json               kind "conformance": outcomes by test id
    results/raw/<machine-id>/benchmark-<device>.json        kind "benchmark": timed cases by case id
    results/raw/<machine-id>/claims.json                    kind "claims": the claims lab's verdicts
    results/raw/<machine-id>/pytest-benchmark/<device>.json pytest-benchmark's own JSON (`pytest-benchmark compare`)

Every entry carries the UTC time it was measured, so merging is per entry, the newer wins, and merging the same
records again changes nothing (`normbench merge` is idempotent, and the order of its inputs does not matter).
Conformance outcomes merge by unit instead. A run's record (one with a `run` section, which only a run writes and
no stored file keeps) replaces exactly the (implementation, variant) units it judged and keeps every other unit as
stored: a `--variant compile` run leaves the eager outcomes alone, without reading the store first, and an
interrupted run keeps, marked `stale`, the stored outcome of each item it never reached. A stored record (a
snapshot, as `normbench merge` reads) merges per implementation: the newer snapshot of an implementation replaces all
of its outcomes. Either way, a pass that the latest run did not confirm never survives.

Results are never lost: every read-merge-write holds a lock on the results folder (`<results>/.normbench.lock`,
via filelock), so concurrent runs keep each other's records; files are written to hidden temporaries
(`.<name>.tmp-XXXX`, matching no record glob) and renamed, and a temporary left by a killed writer is removed by
the next writer. `validate_results_dir` finds a folder that cannot be written, or a record that cannot be read,
before a run judges anything, and `write_fallback` keeps a record that could not be stored.

This module writes records and knows nothing of how they are shown: callers render the leaderboard
(`normbench.publish.write_leaderboard`) after storing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

import normbench
from normbench import deploy
from normbench.record_seal import SealError, seal_path, seal_text, verify
from normbench.verdicts import Counts

API_VERSION = 1
#: where runs write by default, relative to the current folder: a clone's committed results/ is the
#: published leaderboard, refreshed only by an explicit publish step (docs/results.md, *Where results go*)
DEFAULT_RESULTS_DIR = "normbench-results"
CONFORMANCE_FILE = "conformance.json"
#: the kinds of record and the key under which each keeps its entries (dicts keyed by a stable id)
ENTRIES: dict[str, str] = {"conformance": "outcomes", "benchmark": "results", "claims": "claims"}
#: the field of an entry that says when it was measured (merging keeps the newer entry)
STAMPS: tuple[str, ...] = ("measured_utc", "recorded_utc")
PYTEST_BENCHMARK_DIR = "pytest-benchmark"
#: the lock every read-merge-write of a results folder holds: hidden, beside raw/ (not in it, where every entry is a
#: machine's folder), so no record glob matches it
LOCK_FILE = ".normbench.lock"
#: seconds to wait for another writer before giving up (a writer holds the lock for well under a second per record;
#: the lock is an flock, released by the kernel when its holder dies, so a long wait means a live, stuck writer)
LOCK_TIMEOUT_S = 300.0
#: the keys (and types) of each entry of a conformance record's `implementations` mapping
IMPLEMENTATION_FIELDS: dict[str, type] = {"family": str, "source": str, "planned": int, "judged": int,
                                          "unjudged": int, "recorded_utc": str}
#: the key of a run's record that says what its write replaces: {"units": [[implementation, variant], ...],
#: "not_reached": [test id, ...]}; merged into the store, never stored
RUN_KEY = "run"
#: the counts of an implementation's entry (normbench.verdicts.Counts): a run that replaced some of its units has them
#: counted again over every unit stored, as a run that had carried the other units over would have counted them
COUNT_FIELDS: tuple[str, ...] = ("planned", "judged", "skipped", "errors", "unjudged", "failed", "known")
#: why an interrupted run's record keeps a stored outcome of an item the run never reached
STALE_REASON = "kept from the run of {when}: the run after it was interrupted before this item"
#: machine ids and devices name folders and files: nothing that could leave raw/ or hide a file
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class ResultsError(ValueError):
    """A record or results folder normbench refuses; `problems` lists each one (the message joins them)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class ForgedRecord(ResultsError):
    """A record this run wrote and sealed whose bytes no longer match the seal (normbench.record_seal)."""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def normbench_commit() -> str:
    """The commit of the clone normbench runs from; "unknown" for an installed copy (the record's version says which),
    including one in a virtualenv inside someone else's repository, whose commit is not normbench's."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        toplevel, commit = out.stdout.split()
        if Path(toplevel).resolve() != root:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"


def machine_fingerprint() -> dict[str, Any]:
    """What the numbers depend on: CPU / GPU, core count, torch and CUDA versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_id(fingerprint: dict[str, Any] | None = None) -> str:
    """A readable, stable folder name for a machine: device name slug plus a short hash."""
    fp = fingerprint or machine_fingerprint()
    device = fp.get("gpu") or fp.get("cpu") or "unknown"
    slug = re.sub(r"[^a-z0-9]+", "-", str(device).lower()).strip("-")[:40]
    key = json.dumps({k: fp.get(k) for k in ("cpu", "cores", "gpu", "machine")}, sort_keys=True)
    return f"{slug}-{fp.get('cores')}c-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def utc_now() -> str:
    # microseconds: two runs in the same second must still be ordered (the newer entry wins a merge)
    return datetime.now(UTC).isoformat(timespec="microseconds")


def header(kind: str) -> dict[str, Any]:
    fp = machine_fingerprint()
    return {
        "api_version": API_VERSION,
        "kind": kind,
        "machine_id": machine_id(fp),
        "machine": fp,
        "normbench": {"version": normbench.__version__, "commit": normbench_commit()},
        "created_utc": utc_now(),
    }


def conformance_record(outcomes: list[dict[str, Any]], profile: str,
                       implementations: dict[str, dict[str, Any]] | None = None,
                       units: Iterable[tuple[str, str]] | None = None,
                       not_reached: Iterable[str] = ()) -> dict[str, Any]:
    """A conformance record. `implementations` (name -> family, source, planned/judged/unjudged counts, and
    recorded_utc, defaulted to the record's time) names every implementation this run judged.

    Without `units`, storing the record replaces all older outcomes of each of them. With `units` (the
    (implementation, variant) pairs the run judged: a run's record), it replaces those units only, keeps the other
    units stored, and keeps each stored outcome of the same implementation that `not_reached` names (the items an
    interrupted run never ran), marked `stale`; every outcome must belong to one of the units."""
    record = header("conformance")
    record["profile"] = profile
    stamp = record["created_utc"]
    record["outcomes"] = {o["test_id"]: {**o, "recorded_utc": o.get("recorded_utc", stamp)}
                          for o in sorted(outcomes, key=lambda o: o["test_id"])}
    if implementations is not None:
        record["implementations"] = {name: {**entry, "recorded_utc": entry.get("recorded_utc", stamp)}
                                     for name, entry in sorted(implementations.items())}
    if units is not None:
        record[RUN_KEY] = {"units": sorted([str(name), str(variant)] for name, variant in set(units)),
                           "not_reached": sorted(set(not_reached))}
    return record


def benchmark_record(device: str, entries: list[dict[str, Any]], roofline: dict[str, Any] | None,
                     threads: int) -> dict[str, Any]:
    """The timed cases of one session on one device type ("cpu" / "cuda")."""
    record = header("benchmark")
    record.update(device=device, threads=threads, roofline=roofline,
                  results={e["id"]: e for e in sorted(entries, key=lambda e: e["id"])})
    return record


def claims_record(claims: list[dict[str, Any]]) -> dict[str, Any]:
    record = header("claims")
    record["claims"] = {c["id"]: c for c in sorted(claims, key=lambda c: c["id"])}
    return record


def record_filename(record: dict[str, Any]) -> str:
    kind = record["kind"]
    if kind == "conformance":
        return CONFORMANCE_FILE
    if kind == "benchmark":
        return f"benchmark-{record['device']}.json"
    return f"{kind}.json"


def record_path(results_dir: Path, record: dict[str, Any]) -> Path:
    return Path(results_dir) / "raw" / record["machine_id"] / record_filename(record)


def pytest_benchmark_path(results_dir: Path, device: str, machine: str | None = None) -> Path:
    """Where pytest-benchmark's JSON of this machine's `device` run goes (for `pytest-benchmark compare`)."""
    return Path(results_dir) / "raw" / (machine or machine_id()) / PYTEST_BENCHMARK_DIR / f"{device}.json"


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=_json_default)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)


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


def _check_implementations(value: Any, source: str) -> None:
    if not isinstance(value, dict):
        raise ResultsError(f"{source}: `implementations` must be an object (implementation name -> counts)")
    for name, entry in value.items():
        if not isinstance(entry, dict):
            raise ResultsError(f"{source}: implementations[{name!r}] must be an object")
        for key, kind in IMPLEMENTATION_FIELDS.items():
            item = entry.get(key)
            # bool is an int to Python, never a count to a reader
            if not isinstance(item, kind) or isinstance(item, bool) or (kind is int and item < 0):
                want = "a count (int >= 0)" if kind is int else "a string"
                raise ResultsError(f"{source}: implementations[{name!r}][{key!r}] must be {want}, not {item!r}")


def _check_run(data: dict[str, Any], source: str) -> None:
    run = data[RUN_KEY]
    if not isinstance(run, dict) or set(run) != {"units", "not_reached"}:
        raise ResultsError(f"{source}: `{RUN_KEY}` must be an object with exactly `units` and `not_reached`")
    units = run["units"]
    if not isinstance(units, list) or not all(
            isinstance(u, list) and len(u) == 2 and all(isinstance(part, str) for part in u) for u in units):
        raise ResultsError(f"{source}: {RUN_KEY}.units must be a list of [implementation, variant] string pairs")
    if not isinstance(run["not_reached"], list) or not all(isinstance(t, str) for t in run["not_reached"]):
        raise ResultsError(f"{source}: {RUN_KEY}.not_reached must be a list of test ids")
    # an outcome outside the units the record replaces would be stored without ever replacing its older self
    declared = {tuple(u) for u in units}
    outside = [key for key, outcome in data["outcomes"].items() if unit_of(outcome) not in declared]
    if outside:
        raise ResultsError(f"{source}: outcomes {outside[:3]} belong to no unit of {RUN_KEY}.units "
                           "(implementation, variant)")


def validate_record(data: Any, source: str) -> dict[str, Any]:
    """Refuse anything this normbench would misread: another api_version, an unknown kind, missing keys."""
    if not isinstance(data, dict):
        raise ResultsError(f"{source}: not a normbench record (a JSON object with api_version is expected)")
    version = data.get("api_version")
    if version != API_VERSION:
        raise ResultsError(f"{source}: api_version {version!r} is not supported by normbench "
                           f"{normbench.__version__} (expects {API_VERSION}); re-run or migrate it")
    kind = data.get("kind")
    if kind not in ENTRIES:
        raise ResultsError(f"{source}: unknown record kind {kind!r}; this normbench reads {sorted(ENTRIES)}")
    missing = [k for k in ("machine_id", "created_utc", ENTRIES[kind]) if k not in data]
    if kind == "benchmark" and "device" not in data:
        missing.append("device")
    if missing or not isinstance(data[ENTRIES[kind]], dict):
        raise ResultsError(f"{source}: {kind} record lacks {missing or [ENTRIES[kind] + ' (an object)']}")
    # the machine id and device name a folder and a file under raw/: nothing that could point elsewhere
    for key in ("machine_id", "device") if kind == "benchmark" else ("machine_id",):
        if not isinstance(data[key], str) or not _SAFE_NAME.fullmatch(data[key]):
            raise ResultsError(f"{source}: {key} {data[key]!r} is not a plain name (letters, digits, . _ + -)")
    bad = [key for key, entry in data[ENTRIES[kind]].items() if not isinstance(entry, dict)]
    if bad:
        raise ResultsError(f"{source}: {ENTRIES[kind]} entries must be objects; {bad[:3]} are not")
    if kind == "conformance" and "implementations" in data:
        _check_implementations(data["implementations"], source)
    if kind == "conformance" and RUN_KEY in data:
        _check_run(data, source)
    data[ENTRIES[kind]] = canonical_deployments(data[ENTRIES[kind]])
    return data


def canonical_deployments(entries: dict[str, Any]) -> dict[str, Any]:
    """`entries` (a record's results, outcomes or claims, by id) with every deployment named canonically: an entry
    stored under an older name (a benchmark's or claim's ``onnxruntime``, now ``export``) is read under the
    canonical id and variant, so the leaderboard, `normbench compare` and the next merge see one deployment. Where
    both ids are present, the canonical one stays: only this version writes it, so it is the newer."""
    renamed = {key: deploy.canonical_id(key) for key in entries}
    if all(key == new for key, new in renamed.items()):
        return entries
    canonical = {key for key, new in renamed.items() if key == new}
    out: dict[str, Any] = {}
    for key, entry in entries.items():
        new = renamed[key]
        if new == key:
            out[key] = entry
            continue
        if new in canonical:
            continue
        entry = dict(entry)
        if "id" in entry:
            entry["id"] = new
        if "variant" in entry:
            entry["variant"] = deploy.record_name(entry)
        if isinstance(entry.get("details"), dict) and "variant" in entry["details"]:
            entry["details"] = {**entry["details"], "variant": deploy.record_name(entry["details"])}
        out[new] = entry
    return out


def load_record(path: Path, key: bytes | None = None) -> dict[str, Any]:
    """Read a record, refusing one whose api_version (or kind) this normbench does not understand. With the `key`
    of the run that stored it, the record is also refused (ForgedRecord) unless the bytes read are those that run
    sealed: the seal is checked on the very bytes parsed, so nothing can change them in between."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ResultsError(f"{path}: not a readable normbench record: {exc}") from None
    if key is not None:
        try:
            verify(key, Path(path), raw)
        except SealError as exc:
            raise ForgedRecord(str(exc)) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable normbench record: {exc}") from None
    return validate_record(data, str(path))


def _stamp(entry: Any, default: str) -> str:
    if isinstance(entry, dict):
        for key in STAMPS:
            if isinstance(entry.get(key), str):
                return entry[key]
    return default


def _newer(a: Any, a_stamp: str, b: Any, b_stamp: str) -> Any:
    """The newer of two versions of one thing; equal times are broken by content, so the result does not depend
    on which came first (merging is commutative and idempotent)."""
    if a_stamp != b_stamp:
        return a if a_stamp > b_stamp else b
    return a if _canonical(a) >= _canonical(b) else b


@dataclass
class MergeStats:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    #: outcomes dropped because a newer run of their implementation did not produce them again
    removed: int = 0
    files: list[str] = field(default_factory=list)

    def __iadd__(self, other: MergeStats) -> MergeStats:
        self.added += other.added
        self.replaced += other.replaced
        self.unchanged += other.unchanged
        self.removed += other.removed
        self.files += other.files
        return self


def _count(stats: MergeStats, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Tally entries of `new` replacing all of `old`."""
    for key, entry in new.items():
        if key not in old:
            stats.added += 1
        elif _canonical(old[key]) == _canonical(entry):
            stats.unchanged += 1
        else:
            stats.replaced += 1
    stats.removed += len(set(old) - set(new))


def _implementation_groups(record: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The record's outcomes by implementation (with its `implementations` entry), and those naming none."""
    groups: dict[str, dict[str, Any]] = {name: {"entry": entry, "outcomes": {}}
                                         for name, entry in (record.get("implementations") or {}).items()}
    loose = {}
    for key, outcome in record["outcomes"].items():
        name = outcome.get("implementation")
        if isinstance(name, str):
            groups.setdefault(name, {"entry": None, "outcomes": {}})["outcomes"][key] = outcome
        else:
            loose[key] = outcome
    return groups, loose


def _group_stamp(group: dict[str, Any], default: str) -> str:
    entry = group["entry"]
    if isinstance(entry, dict) and isinstance(entry.get("recorded_utc"), str):
        return entry["recorded_utc"]
    return max((_stamp(o, default) for o in group["outcomes"].values()), default=default)


def _place(outcomes: dict[str, tuple[str, Any]], key: str, outcome: Any, stamp: str) -> None:
    """Put one outcome (measured at `stamp`) in `outcomes` (test id -> (stamp, outcome))."""
    # one test id from two implementations is a forged or colliding name: keep the newer, deterministically
    if key in outcomes:
        outcome = _newer(outcomes[key][1], outcomes[key][0], outcome, stamp)
        stamp = max(stamp, outcomes[key][0])
    outcomes[key] = (stamp, outcome)


def unit_of(outcome: Any) -> tuple[str, str] | None:
    """The merge unit of a stored outcome: (implementation, variant), an outcome without a variant being of the
    default deployment; None for one that names no implementation."""
    name = outcome.get("implementation") if isinstance(outcome, dict) else None
    if not isinstance(name, str):
        return None
    return name, outcome.get("variant", deploy.DEFAULT.name)


def _by_unit(outcomes: dict[str, Any]) -> dict[tuple[str, str] | None, dict[str, Any]]:
    groups: dict[tuple[str, str] | None, dict[str, Any]] = defaultdict(dict)
    for key, outcome in outcomes.items():
        groups[unit_of(outcome)][key] = outcome
    return groups


def _stale(outcome: dict[str, Any]) -> dict[str, Any]:
    return {**outcome, "stale": STALE_REASON.format(when=outcome.get("recorded_utc", "an earlier run"))}


def _merge_run(old: dict[str, Any], new: dict[str, Any], stats: MergeStats) -> tuple[dict[str, Any], dict[str, Any]]:
    """Outcomes and `implementations` of a stored record `old` after the run's record `new` (one with a `run`
    section). Each unit the run judged is replaced by the run's outcomes of it (an item the run did not produce
    again is dropped), unless the stored unit is newer; of the items the run never reached (interrupted), the stored
    outcome of the same implementation is kept, marked stale. Every other unit, and every outcome that names no
    implementation, is kept as stored. An implementation the run replaced a unit of gets the run's entry, its counts
    taken over all of its units stored."""
    old_time, new_time = old.get("created_utc", ""), new.get("created_utc", "")
    stored, run = old.get("outcomes", {}), new[RUN_KEY]
    units = {(name, variant) for name, variant in run["units"]}
    not_reached = set(run["not_reached"])
    old_units, new_units = _by_unit(stored), _by_unit(new["outcomes"])
    outcomes: dict[str, tuple[str, Any]] = {}  # test id -> (stamp, outcome)
    replaced: set[str] = set()
    for unit in sorted(set(old_units) | units, key=repr):
        theirs = old_units.get(unit, {})
        if unit not in units:
            for key, outcome in theirs.items():
                _place(outcomes, key, outcome, _stamp(outcome, old_time))
            continue
        mine = new_units.get(unit, {})
        theirs_stamp = max((_stamp(o, old_time) for o in theirs.values()), default="")
        mine_stamp = max((_stamp(o, new_time) for o in mine.values()), default=new_time)
        if theirs and theirs_stamp > mine_stamp:  # a run stored after this one judged this unit later
            stats.unchanged += len(mine)
            chosen, stamp_default = theirs, old_time
        else:
            chosen = {key: _stale(stored[key]) if key in not_reached and isinstance(stored.get(key), dict)
                      and stored[key].get("implementation") == outcome.get("implementation") else outcome
                      for key, outcome in mine.items()}
            _count(stats, theirs, chosen)
            replaced.add(unit[0])
            stamp_default = new_time
        for key, outcome in chosen.items():
            _place(outcomes, key, outcome, _stamp(outcome, stamp_default))
    merged = {key: outcome for key, (_, outcome) in sorted(outcomes.items())}
    implementations = dict(old.get("implementations") or {})
    entries = new.get("implementations") or {}
    for name in sorted(replaced):
        entry = entries.get(name)
        if entry is None:
            # no entry to count with (as a snapshot naming none replaces the stored one): none is kept
            implementations.pop(name, None)
            continue
        counts = Counts.of(o for o in merged.values() if o.get("implementation") == name)
        implementations[name] = {**entry, **{f: getattr(counts, f) for f in COUNT_FIELDS if f in entry}}
    return merged, implementations


def _merge_conformance(old: dict[str, Any], new: dict[str, Any], stats: MergeStats) -> tuple[
        dict[str, Any], dict[str, Any]]:
    """Outcomes and `implementations` of two conformance records. The newer run of an implementation replaces
    every outcome of it (an item that run did not produce again is dropped, so no stale pass survives); other
    implementations are kept. Outcomes that name no implementation merge one by one, the newer winning."""
    old_time, new_time = old.get("created_utc", ""), new.get("created_utc", "")
    old_groups, old_loose = _implementation_groups(old)
    new_groups, new_loose = _implementation_groups(new)
    outcomes: dict[str, tuple[str, Any]] = {}  # test id -> (stamp, outcome)
    implementations = {}

    def place(key: str, outcome: Any, stamp: str) -> None:
        _place(outcomes, key, outcome, stamp)

    for name in sorted(set(old_groups) | set(new_groups)):
        a, b = old_groups.get(name), new_groups.get(name)
        if a is None or b is None:
            chosen = b if a is None else a
            if a is None:
                _count(stats, {}, b["outcomes"])
        else:
            chosen = _newer(a, _group_stamp(a, old_time), b, _group_stamp(b, new_time))
            if chosen is b:
                _count(stats, a["outcomes"], b["outcomes"])
            else:
                stats.unchanged += len(b["outcomes"])  # the new record's run of it is the older one
        stamp = _group_stamp(chosen, old_time if chosen is a else new_time)
        for key, outcome in chosen["outcomes"].items():
            place(key, outcome, stamp)
        if chosen["entry"] is not None:
            implementations[name] = chosen["entry"]
    for key in sorted(set(old_loose) | set(new_loose)):
        if key not in new_loose:
            place(key, old_loose[key], _stamp(old_loose[key], old_time))
            continue
        entry, stamp = new_loose[key], _stamp(new_loose[key], new_time)
        if key in old_loose:
            current, current_stamp = old_loose[key], _stamp(old_loose[key], old_time)
            entry = _newer(current, current_stamp, entry, stamp)
            stamp = max(stamp, current_stamp)
            if _canonical(entry) == _canonical(current):
                stats.unchanged += 1
            else:
                stats.replaced += 1
        else:
            stats.added += 1
        place(key, entry, stamp)
    return {key: outcome for key, (_, outcome) in sorted(outcomes.items())}, implementations


def merge_records(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], MergeStats]:
    """Merge two records of the same machine and kind (and device). Benchmark and claims entries merge one by one,
    the newer winning; conformance outcomes merge per (implementation, variant) unit after a run's record (see
    `_merge_run`), per implementation between stored records (see `_merge_conformance`)."""
    for key in ("kind", "machine_id", "device"):
        if old.get(key) != new.get(key):
            raise ResultsError(f"cannot merge records with different {key}: {old.get(key)!r} vs {new.get(key)!r}")
    if RUN_KEY in old:
        old = _as_first(old)  # a run's record as the older side: what storing it alone would have stored
    entries_key = ENTRIES[new["kind"]]
    body = {entries_key, "implementations", RUN_KEY} if new["kind"] == "conformance" else {entries_key}
    old_time, new_time = old.get("created_utc", ""), new.get("created_utc", "")
    old_head = {k: v for k, v in old.items() if k not in body}
    new_head = {k: v for k, v in new.items() if k not in body}
    merged = dict(_newer(old_head, old_time, new_head, new_time))
    stats = MergeStats()
    if new["kind"] == "conformance":
        merge = _merge_run if RUN_KEY in new else _merge_conformance
        merged[entries_key], implementations = merge(old, new, stats)
        if implementations or "implementations" in old or "implementations" in new:
            merged["implementations"] = dict(sorted(implementations.items()))
        return merged, stats
    entries = dict(old[entries_key])
    for key, entry in new[entries_key].items():
        current = entries.get(key)
        if current is None:
            entries[key] = entry
            stats.added += 1
            continue
        chosen = _newer(current, _stamp(current, old_time), entry, _stamp(entry, new_time))
        if _canonical(chosen) == _canonical(current):
            stats.unchanged += 1
        else:
            entries[key] = chosen
            stats.replaced += 1
    merged[entries_key] = dict(sorted(entries.items()))
    return merged, stats


def _as_first(record: dict[str, Any]) -> dict[str, Any]:
    """A record stored where there is none yet (a run's record as merged into nothing: its `run` section dropped)."""
    if RUN_KEY in record:
        nothing = {"kind": record["kind"], "machine_id": record["machine_id"], "created_utc": "", "outcomes": {}}
        return merge_records(nothing, record)[0]
    entries_key = ENTRIES[record["kind"]]
    first = {**record, entries_key: dict(sorted(record[entries_key].items()))}
    if "implementations" in record:
        first["implementations"] = dict(sorted(record["implementations"].items()))
    return first


def _move_away(path: Path) -> str:
    # a name that no record glob matches: the folder is usable again, and the file is kept for a look
    return f"move it away (e.g. `mv {path} {path}.bad`) or replace it with a good copy (`normbench merge`), then re-run"


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
                    raise ResultsError(f"{exc}; {_move_away(path)}") from None
            if path in merged:
                merged[path], more = merge_records(merged[path], record)
                stats += more
            else:
                merged[path] = _as_first(record)
                stats.added += len(record[ENTRIES[record["kind"]]])
        except ResultsError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
    if errors:
        raise ResultsError("; ".join(errors), problems=errors)
    return merged, stats


def changed_texts(merged: dict[Path, dict[str, Any]], key: bytes | None = None) -> dict[Path, str]:
    """The files whose content would change (storing the same record again writes nothing). With a run's `key`,
    every record's seal too (normbench.record_seal): a record left unchanged is sealed by this run all the same."""
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
    beside it (normbench.record_seal) that `load_record(path, key)` checks. Raises ResultsError naming the file
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
            problems.append(f"{exc}; {_move_away(path)}")
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

