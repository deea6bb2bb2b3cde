"""Results store: schema-versioned JSON records under results/raw/<machine-id>/, written atomically.

asv's lesson: every record carries an `api_version`; a record of another version is refused with a
message, never misread.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import normbench

API_VERSION = 1
CONFORMANCE_FILE = "conformance.json"


class ResultsError(ValueError):
    pass


def _cpu_model() -> str:
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
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def machine_id(fingerprint: dict[str, Any] | None = None) -> str:
    """A readable, stable folder name for a machine: device name slug plus a short hash."""
    fp = fingerprint or machine_fingerprint()
    device = fp.get("gpu") or fp.get("cpu") or "unknown"
    slug = re.sub(r"[^a-z0-9]+", "-", str(device).lower()).strip("-")[:40]
    key = json.dumps({k: fp.get(k) for k in ("cpu", "cores", "gpu", "machine")}, sort_keys=True)
    return f"{slug}-{fp.get('cores')}c-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def header(kind: str) -> dict[str, Any]:
    fp = machine_fingerprint()
    return {
        "api_version": API_VERSION,
        "kind": kind,
        "machine_id": machine_id(fp),
        "machine": fp,
        "normbench": {"version": normbench.__version__, "commit": normbench_commit()},
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def conformance_record(outcomes: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    record = header("conformance")
    record["profile"] = profile
    record["outcomes"] = {o["test_id"]: o for o in sorted(outcomes, key=lambda o: o["test_id"])}
    return record


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)


def load_record(path: Path) -> dict[str, Any]:
    """Read a record, refusing one whose api_version this normbench does not understand."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable normbench record: {exc}") from None
    version = data.get("api_version") if isinstance(data, dict) else None
    if version != API_VERSION:
        raise ResultsError(f"{path}: api_version {version!r} is not supported by normbench "
                           f"{normbench.__version__} (expects {API_VERSION}); re-run or migrate it")
    return data


def write_conformance(results_dir: Path, record: dict[str, Any]) -> Path:
    """Merge the record's outcomes into this machine's conformance file (same ids replaced), then
    re-render the leaderboard from every stored record."""
    path = Path(results_dir) / "raw" / record["machine_id"] / CONFORMANCE_FILE
    if path.exists():
        previous = load_record(path)
        merged = dict(previous.get("outcomes", {}))
        merged.update(record["outcomes"])
        record = {**record, "outcomes": dict(sorted(merged.items()))}
    atomic_write_json(path, record)
    from normbench.leaderboard import write_leaderboard

    write_leaderboard(Path(results_dir))
    return path


def load_records(results_dir: Path, kind: str) -> list[dict[str, Any]]:
    records = []
    for path in sorted((Path(results_dir) / "raw").glob("*/*.json")):
        record = load_record(path)
        if record.get("kind") == kind:
            records.append(record)
    return records
