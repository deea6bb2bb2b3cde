"""Results store: schema-versioned JSON records under results/raw/<machine-id>/, written atomically.

asv's lesson: every record carries an `api_version`; a record of another version (or of a kind this normbench
does not know) is refused with a message, never misread. One file per machine and kind:

    results/raw/<machine-id>/conformance.json               kind "conformance": outcomes by test id
    results/raw/<machine-id>/benchmark-<device>.json        kind "benchmark": timed cases by case id
    results/raw/<machine-id>/claims.json                    kind "claims": the claims lab's verdicts
    results/raw/<machine-id>/pytest-benchmark/<device>.json pytest-benchmark's own JSON (`pytest-benchmark compare`)

Every entry carries the UTC time it was measured, so merging is per entry, the newer wins, and merging the same
records again changes nothing (`normbench merge` is idempotent, and the order of its inputs does not matter).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import normbench

API_VERSION = 1
CONFORMANCE_FILE = "conformance.json"
#: the kinds of record and the key under which each keeps its entries (dicts keyed by a stable id)
ENTRIES: dict[str, str] = {"conformance": "outcomes", "benchmark": "results", "claims": "claims"}
#: the field of an entry that says when it was measured (merging keeps the newer entry)
STAMPS: tuple[str, ...] = ("measured_utc", "recorded_utc")
PYTEST_BENCHMARK_DIR = "pytest-benchmark"


class ResultsError(ValueError):
    pass


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def normbench_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
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


def conformance_record(outcomes: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    record = header("conformance")
    record["profile"] = profile
    stamp = record["created_utc"]
    record["outcomes"] = {o["test_id"]: {**o, "recorded_utc": o.get("recorded_utc", stamp)}
                          for o in sorted(outcomes, key=lambda o: o["test_id"])}
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


def atomic_write_json(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)


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
    return data


def load_record(path: Path) -> dict[str, Any]:
    """Read a record, refusing one whose api_version (or kind) this normbench does not understand."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
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
    files: list[str] = field(default_factory=list)

    def __iadd__(self, other: MergeStats) -> MergeStats:
        self.added += other.added
        self.replaced += other.replaced
        self.unchanged += other.unchanged
        self.files += other.files
        return self


def merge_records(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], MergeStats]:
    """Entry-wise merge of two records of the same machine and kind (and device): the newer entry wins."""
    for key in ("kind", "machine_id", "device"):
        if old.get(key) != new.get(key):
            raise ResultsError(f"cannot merge records with different {key}: {old.get(key)!r} vs {new.get(key)!r}")
    entries_key = ENTRIES[new["kind"]]
    old_time, new_time = old.get("created_utc", ""), new.get("created_utc", "")
    old_head = {k: v for k, v in old.items() if k != entries_key}
    new_head = {k: v for k, v in new.items() if k != entries_key}
    merged = dict(_newer(old_head, old_time, new_head, new_time))
    entries = dict(old[entries_key])
    stats = MergeStats()
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


def store_record(results_dir: Path, record: dict[str, Any]) -> tuple[Path, MergeStats]:
    """Merge `record` into this machine's file of its kind (created when absent), atomically."""
    record = validate_record(record, "record to store")
    path = record_path(results_dir, record)
    if path.exists():
        merged, stats = merge_records(load_record(path), record)
    else:
        entries_key = ENTRIES[record["kind"]]
        merged = {**record, entries_key: dict(sorted(record[entries_key].items()))}
        stats = MergeStats(added=len(record[entries_key]))
    if not path.exists() or path.read_text(encoding="utf-8") != dumps(merged):
        atomic_write_json(path, merged)
        stats.files.append(str(path))
    return path, stats


def write_conformance(results_dir: Path, record: dict[str, Any]) -> Path:
    """Merge the record's outcomes into this machine's conformance file (same ids replaced), then
    re-render the leaderboard from every stored record."""
    path, _ = store_record(Path(results_dir), record)
    from normbench.leaderboard import write_leaderboard

    write_leaderboard(Path(results_dir))
    return path


def record_files(results_dir: Path) -> list[Path]:
    """Every record file under results_dir/raw/<machine-id>/ (pytest-benchmark's own JSON lives a level deeper)."""
    return sorted((Path(results_dir) / "raw").glob("*/*.json"))


def scan_records(results_dir: Path) -> tuple[list[dict[str, Any]], list[ResultsError]]:
    """Every readable record, and a refusal (with its message) for every file that is not one."""
    records, errors = [], []
    for path in record_files(results_dir):
        try:
            records.append(load_record(path))
        except ResultsError as exc:
            errors.append(exc)
    return records, errors


def load_records(results_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The readable records (of `kind`), refusing the run on a record this normbench cannot read."""
    records, errors = scan_records(results_dir)
    if errors:
        raise ResultsError("; ".join(map(str, errors)))
    return [r for r in records if kind is None or r["kind"] == kind]


def write_fallback(record: dict[str, Any]) -> Path:
    """Where the verdicts go when the results folder failed under a finished run: a fresh file in the temp dir."""
    stamp = utc_now().replace(":", "").replace("+", "Z")
    fd, name = tempfile.mkstemp(prefix=f"normbench-{record.get('kind', 'record')}-{stamp}-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dumps(record))
    return Path(name)
