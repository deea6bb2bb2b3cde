"""Reading one record: refuse what this normbench would misread, check a run's seal, name deployments canonically."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from normbench import deploy
from normbench.store.errors import ForgedRecord, ResultsError
from normbench.store.records import API_VERSION, ENTRIES, RUN_KEY, unit_of
from normbench.store.seal import SealError, verify
from normbench.version import __version__

#: the keys (and types) of each entry of a conformance record's `implementations` mapping
IMPLEMENTATION_FIELDS: dict[str, type] = {"family": str, "source": str, "planned": int, "judged": int,
                                          "unjudged": int, "recorded_utc": str}
#: machine ids and devices name folders and files: nothing that could leave raw/ or hide a file
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


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
                           f"{__version__} (expects {API_VERSION}); re-run or migrate it")
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


