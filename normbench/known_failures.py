"""Known failures: per-implementation YAML files of test-id prefixes, each with its reason.

array-api-tests' lesson: the list is data, every entry says why, and an entry that no longer matches a
failing item is reported as stale so the list cannot rot silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class KnownFailuresError(ValueError):
    pass


@dataclass(frozen=True)
class KnownFailure:
    prefix: str
    reason: str
    source: str

    def __str__(self) -> str:
        return f"{self.prefix!r} ({self.source}): {self.reason}"


@dataclass
class KnownFailures:
    entries: list[KnownFailure] = field(default_factory=list)

    def match(self, test_id: str) -> KnownFailure | None:
        for entry in self.entries:
            if test_id.startswith(entry.prefix):
                return entry
        return None

    def reason_for(self, test_id: str) -> str | None:
        entry = self.match(test_id)
        return None if entry is None else f"{entry.reason} [{entry.source}]"

    def stale(self, outcomes: Mapping[str, Mapping[str, Any]], planned: Iterable[tuple[str, str, str]] = ()
              ) -> list[KnownFailure]:
        """Entries for a judged implementation that match no planned item (a typo, a renamed property), or
        whose every item run passed. `planned` holds (family, implementation, test id) of every planned item.

        An entry whose items were all deselected (`-k`) or whose implementation is not judged in this run
        (`--impl`) was not exercised, so it is not stale: otherwise every narrowed run would cry wolf.
        """
        planned = list(planned)
        heads = {f"{family}[{impl}-" for family, impl, _ in planned}
        ids = {tid for _, _, tid in planned} | set(outcomes)
        stale = []
        for entry in self.entries:
            if not any(entry.prefix.startswith(head) or head.startswith(entry.prefix) for head in heads):
                continue
            if not any(tid.startswith(entry.prefix) for tid in ids):
                stale.append(entry)
                continue
            matched = [o for tid, o in outcomes.items() if tid.startswith(entry.prefix)]
            if matched and all(o.get("verdict") in ("pass", "report") for o in matched):
                stale.append(entry)
        return stale


def _load_file(path: Path) -> list[KnownFailure]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise KnownFailuresError(f"{path}: malformed YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"implementation", "known_failures"}:
        raise KnownFailuresError(f"{path}: expected keys 'implementation' and 'known_failures'")
    entries = []
    for i, raw in enumerate(data.get("known_failures") or []):
        if not isinstance(raw, dict) or set(raw) != {"id", "reason"} or not str(raw["reason"]).strip():
            raise KnownFailuresError(f"{path}: known_failures[{i}]: each entry needs exactly 'id' and a "
                                     "non-empty 'reason'")
        entries.append(KnownFailure(str(raw["id"]), str(raw["reason"]), path.name))
    return entries


def load_known_failures(sources: Iterable[Path]) -> KnownFailures:
    result = KnownFailures()
    for source in sources:
        files = sorted(source.glob("*.yaml")) if source.is_dir() else [source] if source.exists() else []
        for path in files:
            result.entries.extend(_load_file(path))
    return result
