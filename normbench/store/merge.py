"""Merging two records of one machine and kind: per entry the newer wins, conformance per (implementation, variant)
unit after a run and per implementation between snapshots. Pure: nothing here reads or writes a file."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from normbench.store.errors import ResultsError
from normbench.store.records import ENTRIES, RUN_KEY, canonical, unit_of
from normbench.verdicts import Counts

#: the field of an entry that says when it was measured (merging keeps the newer entry)
STAMPS: tuple[str, ...] = ("measured_utc", "recorded_utc")
#: the counts of an implementation's entry (normbench.verdicts.Counts): a run that replaced some of its units has them
#: counted again over every unit stored, as a run that had carried the other units over would have counted them
COUNT_FIELDS: tuple[str, ...] = ("planned", "judged", "skipped", "errors", "unjudged", "failed", "known")
#: why an interrupted run's record keeps a stored outcome of an item the run never reached
STALE_REASON = "kept from the run of {when}: the run after it was interrupted before this item"


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
    return a if canonical(a) >= canonical(b) else b


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
        elif canonical(old[key]) == canonical(entry):
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
            if canonical(entry) == canonical(current):
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
        old = as_first(old)  # a run's record as the older side: what storing it alone would have stored
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
        if canonical(chosen) == canonical(current):
            stats.unchanged += 1
        else:
            entries[key] = chosen
            stats.replaced += 1
    merged[entries_key] = dict(sorted(entries.items()))
    return merged, stats


def as_first(record: dict[str, Any]) -> dict[str, Any]:
    """A record stored where there is none yet (a run's record as merged into nothing: its `run` section dropped)."""
    if RUN_KEY in record:
        nothing = {"kind": record["kind"], "machine_id": record["machine_id"], "created_utc": "", "outcomes": {}}
        return merge_records(nothing, record)[0]
    entries_key = ENTRIES[record["kind"]]
    first = {**record, entries_key: dict(sorted(record[entries_key].items()))}
    if "implementations" in record:
        first["implementations"] = dict(sorted(record["implementations"].items()))
    return first


