"""What a record is: its header, the builders of each kind, the file it goes to, its JSON text, its merge unit."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from normbench import deploy
from normbench.store.machine import machine_fingerprint, machine_id, normbench_commit
from normbench.version import __version__

API_VERSION = 1
#: where runs write by default, relative to the current folder: a clone's committed results/ is the
#: published leaderboard, refreshed only by an explicit publish step (docs/results.md, *Where results go*)
DEFAULT_RESULTS_DIR = "normbench-results"
CONFORMANCE_FILE = "conformance.json"
#: the kinds of record and the key under which each keeps its entries (dicts keyed by a stable id)
ENTRIES: dict[str, str] = {"conformance": "outcomes", "benchmark": "results", "claims": "claims"}
PYTEST_BENCHMARK_DIR = "pytest-benchmark"
#: the key of a run's record that says what its write replaces: {"units": [[implementation, variant], ...],
#: "not_reached": [test id, ...]}; merged into the store, never stored
RUN_KEY = "run"


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
        "normbench": {"version": __version__, "commit": normbench_commit()},
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


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=_json_default)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=_json_default) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)



def unit_of(outcome: Any) -> tuple[str, str] | None:
    """The merge unit of a stored outcome: (implementation, variant), an outcome without a variant being of the
    default deployment; None for one that names no implementation."""
    name = outcome.get("implementation") if isinstance(outcome, dict) else None
    if not isinstance(name, str):
        return None
    return name, outcome.get("variant", deploy.DEFAULT.name)


