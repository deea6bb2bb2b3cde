"""An item's identity (`ItemKey`) and its judged outcome (`Outcome`), typed from where the judge makes an outcome to
where the run hands it to the store, which stores records (`Outcome.to_record`): the record format is the fixed
contract of results/ (api_version), so a record read and written back (`Outcome.from_record`) is the same record.

An outcome crosses a process boundary only as its record (xdist's execnet and normbench.wire carry plain data), and
is read back on the other side with `from_record`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from normbench import deploy
from normbench.verdicts import Verdict

DEFAULT_VARIANT = deploy.DEFAULT.name


class OutcomeError(ValueError):
    """A record that is not an outcome: names the item and the field."""


@dataclass(frozen=True)
class ItemKey:
    """What identifies a planned item: (implementation, property, mode, dtype, device, variant) in its family."""

    family: str
    implementation: str
    property: str
    mode: str
    dtype: str
    device: str = "cpu"
    variant: str = DEFAULT_VARIANT

    @property
    def test_id(self) -> str:
        """Stable id built from spec fields: family[impl-property(-mode)-dtype(-device)(-variant)]; eager, the
        default variant, adds no segment, so ids from before variants existed still name the same items."""
        parts = [self.implementation, self.property]
        if self.mode != "any":
            parts.append(self.mode)
        parts.append(self.dtype)
        if self.device != "cpu":
            parts.append(self.device)
        if self.variant != DEFAULT_VARIANT:
            parts.append(self.variant)
        return f"{self.family}[{'-'.join(parts)}]"

    @property
    def unit(self) -> tuple[str, str]:
        """The store's merge unit this item belongs to: (implementation, variant)."""
        return self.implementation, self.variant


#: the record fields an ItemKey holds, in its order
KEY_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ItemKey))
#: the record fields an Outcome holds beside its key (any other field of a record is in `Outcome.extra`)
OWN_FIELDS: tuple[str, ...] = ("test_id", "check", "expect", "verdict", "observed", "summary", "metrics",
                               "counterexample", "duration_s", "ulp")
#: the fields every outcome record has, whatever else it lacks (a configuration item's outcome has only these)
REQUIRED_FIELDS: tuple[str, ...] = ("test_id", "verdict", "summary")
#: the fields of an outcome that names no planned item: a spec or plugin that could not load, an id outside the plan
_UNPLANNED_ABSENT = frozenset(KEY_FIELDS + OWN_FIELDS) - set(REQUIRED_FIELDS)


@dataclass(eq=True)
class Outcome:
    """The verdict on one item, with everything measured. Not a mapping: what reads records (the counters, the
    publishers, the store) takes `to_record()`, so a dict-style read of an outcome is a TypeError, not a record
    field read by another name."""

    test_id: str
    verdict: Verdict
    summary: str
    #: None for an outcome that names no planned item (a configuration error, an id outside the plan)
    key: ItemKey | None = None
    check: str | None = None
    expect: str | None = None
    observed: str | None = None  # "holds" / "violated" / None when it could not be measured
    metrics: dict[str, Any] = field(default_factory=dict)
    counterexample: dict[str, Any] | None = None
    duration_s: float = 0.0
    #: how the metrics' max_ulp were measured (normbench.compare.ULP_DEFINITION: at the output's scale)
    ulp: str | None = None
    #: every other field of the record, as it holds them: source, captured_output, inherited_from, known_failure,
    #: stale, recorded_utc, ...
    extra: dict[str, Any] = field(default_factory=dict)
    #: the fields of KEY_FIELDS + OWN_FIELDS the record does not have (older records: no variant, no ulp), so that
    #: the record is written back as it was read
    absent: frozenset[str] = frozenset()

    @classmethod
    def unplanned(cls, test_id: str, verdict: Verdict, summary: str) -> Outcome:
        """The outcome of something that is no planned item: its record holds the id, the verdict and the summary."""
        return cls(test_id=test_id, verdict=verdict, summary=summary, absent=_UNPLANNED_ABSENT)

    def _field(self, name: str) -> Any:
        if name in KEY_FIELDS:
            return getattr(self.key, name)
        return getattr(self, name)

    def to_record(self) -> dict[str, Any]:
        """The record results/ stores: plain data only (the verdict as its string)."""
        record = {name: self._field(name) for name in (*KEY_FIELDS, *OWN_FIELDS)
                  if name not in self.absent and (self.key is not None or name not in KEY_FIELDS)}
        record["verdict"] = str(self.verdict)
        record.update(self.extra)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Outcome:
        """An outcome from its record (a stored one, or one that crossed a process boundary). A record without an
        implementation names no planned item; one with an implementation must name all of its key but the variant
        (an older record, of the default variant) and the device."""
        test_id = record.get("test_id")
        if not isinstance(test_id, str):
            raise OutcomeError(f"an outcome record without a test_id: fields {sorted(record)[:8]}")
        for name in REQUIRED_FIELDS:
            if name not in record:
                raise OutcomeError(f"outcome {test_id!r}: the record has no {name!r}")
        try:
            verdict = Verdict(record["verdict"])
        except ValueError:
            raise OutcomeError(f"outcome {test_id!r}: unknown verdict {record['verdict']!r}; known: "
                               f"{[str(v) for v in Verdict]}") from None
        key = None
        if "implementation" in record:
            missing = [n for n in KEY_FIELDS if n not in record and n not in ("device", "variant")]
            if missing:
                raise OutcomeError(f"outcome {test_id!r}: the record names an implementation but has no {missing}")
            key = ItemKey(**{n: record[n] for n in KEY_FIELDS if n in record})
        own = {n: record[n] for n in OWN_FIELDS if n in record and n != "verdict"}
        known = set(KEY_FIELDS + OWN_FIELDS)
        return cls(**own, verdict=verdict, key=key, extra={k: v for k, v in record.items() if k not in known},
                   absent=frozenset(n for n in known if n not in record))

    __hash__ = None  # type: ignore[assignment]  # mutable: the sandbox and the plugin add to an outcome
