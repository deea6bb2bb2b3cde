"""Known failures: per-implementation YAML files of test-id prefixes, each with its reason.

array-api-tests' lesson: the list is data, every entry says why, and an entry that no longer matches a
failing item is reported as stale so the list cannot rot silently.

An entry is scoped by structure, never by text: it applies only to items whose implementation *is* the
file's `implementation:` (compared by name, not read back out of the test id), and its id must end at a
whole id segment. Otherwise a plugin named ``torch.nn.LayerNorm-weight_gradient_reduction-float16-evil``
would inherit torch's known failures, and ``id: ""`` would silence every failure of every implementation.

Inherited failures (a class that calls a torch op fails where the op fails) are the one exception, and they are scoped
by the op, not the name: an entry of a torch op (``F.layer_norm``) may name the aten ops it is about (``aten_ops:
[aten.native_layer_norm]``). Another implementation's failing item of the same property, mode and dtype is that entry's
*inherited* failure only when its judging process shows the deviation is the op's: it dispatches the op, and the item
passes with the op computed in float64 (normbench.float64_ops). The parent applies it (normbench.pytest_plugin); this
module says which entries may.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normbench import deploy, safe_yaml
from normbench.verdicts import Verdict

#: the characters that may follow an entry id inside a test id: the next segment, the end of the
#: parameters, or the end of the id. Anything else means the id stopped inside a segment.
_SEGMENT_ENDS = ("-", "]")
#: a family name as the spec schema allows it (specs/schema.json `family`).
_FAMILY = r"[a-z][a-z0-9_]*"


class KnownFailuresError(ValueError):
    """A known-failures file or path that cannot be used; the message names the file (and the entry)."""

    def __init__(self, path: str | Path, message: str, key: str = "") -> None:
        self.path = str(path)
        self.key = key
        super().__init__(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")


@dataclass(frozen=True)
class KnownFailure:
    prefix: str
    reason: str
    #: the file's name, shown with the reason
    source: str
    #: the implementation named by the file's `implementation:` key; the entry applies to it alone
    implementation: str = ""
    #: the file's full path
    path: str = ""
    #: the aten ops (normbench.float64_ops.SUBSTITUTES) the failure is about: it may be inherited by any
    #: implementation that dispatches them (eager items only)
    aten_ops: tuple[str, ...] = ()

    def matches(self, test_id: str, implementation: str) -> bool:
        """True when `test_id` is an item of exactly this entry's implementation and the entry's id is a
        prefix of it that ends at a whole segment (`...-float16` matches `...-float16]`, not `...-float16x]`)."""
        if implementation != self.implementation or not self.prefix or not test_id.startswith(self.prefix):
            return False
        rest = test_id[len(self.prefix):]
        return not rest or rest.startswith(_SEGMENT_ENDS)

    def inheritable_by(self, test_id: str, implementation: str, variant: str) -> bool:
        """True when `test_id`, an eager item of another implementation, is the same property, mode and dtype as
        this entry's items (the id after the implementation's name starts with the entry's, at a whole segment),
        and this entry names the aten ops it is about. Whether the implementation calls them is for its judging
        process to show; the family may differ (the op's precision is the same wherever it is called)."""
        if not self.aten_ops or implementation == self.implementation or variant != deploy.DEFAULT.name:
            return False
        own = self.prefix.find(f"[{self.implementation}")
        tail = self.prefix[own + len(self.implementation) + 1:]
        start = test_id.find("[")
        if own < 0 or start < 0 or not test_id[start + 1:].startswith(implementation):
            return False
        rest = test_id[start + 1 + len(implementation):]
        if not rest.startswith(tail):
            return False
        after = rest[len(tail):]
        return not after or after.startswith(_SEGMENT_ENDS)

    @property
    def inherited_label(self) -> str:
        """How an inheriting item names its source: "torch F.layer_norm (aten.native_layer_norm)"."""
        who = self.implementation if self.implementation.startswith("torch") else f"torch {self.implementation}"
        return f"{who} ({', '.join(self.aten_ops)})"

    def __str__(self) -> str:
        return f"{self.prefix!r} ({self.source}): {self.reason}"


@dataclass(frozen=True)
class KnownFailuresFile:
    """One loaded file: the implementation it is about and its entries."""

    path: str
    implementation: str
    entries: tuple[KnownFailure, ...] = ()


@dataclass
class KnownFailures:
    entries: list[KnownFailure] = field(default_factory=list)
    files: list[KnownFailuresFile] = field(default_factory=list)
    #: files that could not be used, one error each (naming the file): the rest still applies
    errors: list[KnownFailuresError] = field(default_factory=list)

    def match(self, test_id: str, implementation: str) -> KnownFailure | None:
        for entry in self.entries:
            if entry.matches(test_id, implementation):
                return entry
        return None

    def reason_for(self, test_id: str, implementation: str) -> str | None:
        """The reason `test_id`, an item of `implementation` (its registered name, from the plan item, never
        parsed out of the id), is a known failure, or None."""
        entry = self.match(test_id, implementation)
        return None if entry is None else f"{entry.reason} [{entry.source}]"

    def inheritable(self, test_id: str, implementation: str, variant: str) -> list[KnownFailure]:
        """The entries of torch ops whose failure `test_id` (an item of `implementation`) may inherit."""
        return [e for e in self.entries if e.inheritable_by(test_id, implementation, variant)]

    def unknown_implementations(self, known_names: Iterable[str]) -> list[KnownFailuresFile]:
        """Files whose `implementation:` is none of `known_names` (the discovered implementations): a typo
        or an uninstalled plugin, whose entries can never apply."""
        known = set(known_names)
        return [f for f in self.files if f.implementation not in known]

    def stale(self, outcomes: Mapping[str, Mapping[str, Any]], planned: Iterable[tuple[str, str, str]] = (),
              possible: Iterable[tuple[str, str, str]] | None = None) -> list[KnownFailure]:
        """Entries for a judged implementation that match no possible item (a typo, a renamed property), or
        whose every item run passed. `planned` holds (family, implementation, test id) of every planned item,
        `possible` those of every item a complete plan would hold (default: `planned`; a deployment variant's
        bounded plan leaves items out); each outcome's "implementation" field says whose item it is.

        An entry whose items were all deselected (`-k`), left out of a bounded plan, or whose implementation is
        not judged in this run (`--impl`) was not exercised, so it is not stale: otherwise every narrowed run
        would cry wolf.
        """
        planned = list(planned)
        possible = planned if possible is None else list(possible)
        judged = {impl for _, impl, _ in planned}
        stale = []
        for entry in self.entries:
            if entry.implementation not in judged:
                continue
            if not any(entry.matches(tid, impl) for _, impl, tid in possible):
                stale.append(entry)
                continue
            matched = [o for tid, o in outcomes.items() if entry.matches(tid, str(o.get("implementation", "")))]
            if matched and all(o.get("verdict") in (Verdict.PASS, Verdict.REPORT) for o in matched):
                stale.append(entry)
        return stale


def _id_problem(entry_id: str, implementation: str) -> str | None:
    """Why `entry_id` cannot be an id prefix for `implementation`'s items, or None when it can."""
    if not entry_id:
        return "'id' is empty (it would match every item)"
    head = re.match(rf"({_FAMILY})\[{re.escape(implementation)}(?=[-\]])", entry_id)
    if head is None:
        return (f"id {entry_id!r} must start with '<family>[{implementation}-' or '<family>[{implementation}]', "
                "the implementation named by this file's 'implementation:' key")
    rest = entry_id[head.end():]
    if rest.endswith("-"):
        return f"id {entry_id!r} ends with '-'; it must end at a whole id segment"
    if "]" in rest[:-1] or "[" in rest or any(c.isspace() for c in rest):
        return f"id {entry_id!r} is not a test id prefix (text after ']', or '[' / whitespace in it)"
    return None


def _aten_ops(path: Path, key: str, entry_id: str, value: Any) -> tuple[str, ...]:
    """An entry's `aten_ops`: ops normbench can compute in float64 (else nothing could show a deviation is theirs),
    and only on an eager entry (a compiled or exported graph runs other kernels)."""
    from normbench.float64_ops import SUBSTITUTES
    from normbench.variants import DEFAULT_VARIANT, VARIANTS

    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise KnownFailuresError(path, f"'aten_ops' must be a non-empty list of op names, got {value!r}", key=key)
    unknown = sorted(set(value) - set(SUBSTITUTES))
    if unknown:
        raise KnownFailuresError(path, f"'aten_ops' names {unknown}, which normbench cannot compute in float64 to "
                                 f"show a deviation is the op's; known: {sorted(SUBSTITUTES)}", key=key)
    named = [v for v in VARIANTS if v != DEFAULT_VARIANT and (f"-{v}]" in entry_id or entry_id.endswith(f"-{v}"))]
    if named:
        raise KnownFailuresError(path, f"'aten_ops' on a {named[0]} entry: a failure is inherited from an op in "
                                 "eager mode only", key=key)
    return tuple(dict.fromkeys(value))


def _load_file(path: Path) -> KnownFailuresFile:
    # a regular UTF-8 file of at most 1 MiB, nested at most 32 deep, no alias of a collection (normbench.safe_yaml)
    try:
        data = safe_yaml.load_file(path)
    except safe_yaml.YamlFileError as exc:
        raise KnownFailuresError(path, exc.message, key=exc.where) from None
    if not isinstance(data, dict):
        raise KnownFailuresError(path, "expected a mapping with keys 'implementation' and 'known_failures', got "
                                 f"{type(data).__name__}")
    extra = sorted(map(str, set(data) - {"implementation", "known_failures"}))
    if extra:
        raise KnownFailuresError(path, f"unknown key(s) {extra}; expected 'implementation' and 'known_failures'")
    implementation = data.get("implementation")
    if not isinstance(implementation, str) or not implementation.strip():
        raise KnownFailuresError(path, "required: the name of the implementation this file is about, got "
                                 f"{implementation!r}", key="implementation")
    raw_entries = data.get("known_failures")
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        raise KnownFailuresError(path, f"must be a list of entries, got {type(raw_entries).__name__}",
                                 key="known_failures")
    entries = []
    for i, raw in enumerate(raw_entries):
        key = f"known_failures[{i}]"
        if not isinstance(raw, dict) or not {"id", "reason"} <= set(raw) <= {"id", "reason", "aten_ops"}:
            raise KnownFailuresError(path, "each entry needs exactly 'id' and 'reason' (and may name 'aten_ops')",
                                     key=key)
        if not isinstance(raw["id"], str):
            raise KnownFailuresError(path, f"'id' must be a string, got {raw['id']!r}", key=key)
        if not isinstance(raw["reason"], str) or not raw["reason"].strip():
            raise KnownFailuresError(path, "'reason' must be a non-empty string", key=key)
        problem = _id_problem(raw["id"], implementation)
        if problem is not None:
            raise KnownFailuresError(path, problem, key=key)
        aten_ops = _aten_ops(path, key, raw["id"], raw.get("aten_ops"))
        entries.append(KnownFailure(raw["id"], raw["reason"], path.name, implementation, str(path), aten_ops))
    return KnownFailuresFile(str(path), implementation, tuple(entries))


def load_known_failures(sources: Iterable[Path], *, builtin: Path | None = None) -> KnownFailures:
    """Load every *.yaml file under `builtin` (which may be absent) and `sources` (files or directories given
    explicitly, e.g. with --known-failures: one that does not exist raises KnownFailuresError naming it).

    A malformed file never stops the others: it is recorded in `errors` and its entries are not applied.
    """
    paths: list[Path] = []
    if builtin is not None and builtin.is_dir():
        paths.extend(sorted(builtin.glob("*.yaml")))
    for source in map(Path, sources):
        if source.is_dir():
            paths.extend(sorted(source.glob("*.yaml")))
        elif source.exists():
            paths.append(source)
        else:
            raise KnownFailuresError(source, "no such known-failures file or directory")
    result = KnownFailures()
    seen: set[Path] = set()
    for path in paths:
        # the same file named twice (a directory and a file in it) would double its entries
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            loaded = _load_file(path)
        except KnownFailuresError as exc:
            result.errors.append(exc)
            continue
        except Exception as exc:  # a loader bug must not stop the other files: say which file, and what
            result.errors.append(KnownFailuresError(path, f"loading raised {type(exc).__name__}: {exc}"))
            continue
        result.files.append(loaded)
        result.entries.extend(loaded.entries)
    return result


def inherited_failure(candidates: Iterable[KnownFailure], metrics: Mapping[str, Any]) -> KnownFailure | None:
    """The entry among `candidates` (KnownFailures.inheritable for a failing item) whose failure that item
    inherits, read from what its judging process measured (normbench.float64_ops): the item dispatched one of the
    entry's ops, and judged again with those ops computed in float64 it passed, so the op's precision is the whole
    deviation. A class that adds a bug of its own still fails then, and one that never dispatches the op replaced
    nothing: neither is excused."""
    from normbench.float64_ops import DISPATCHED, REJUDGED

    if metrics.get(REJUDGED) != Verdict.PASS:
        return None
    dispatched = metrics.get(DISPATCHED)
    dispatched = set(dispatched) if isinstance(dispatched, list) else set()
    for entry in candidates:
        if dispatched & set(entry.aten_ops):
            return entry
    return None


def inherited_reason(entry: KnownFailure) -> str:
    """The known-failure reason of an item that inherits `entry`: "inherited from torch F.layer_norm
    (aten.native_layer_norm): <reason> [F.layer_norm.yaml]"."""
    return f"inherited from {entry.inherited_label}: {entry.reason} [{entry.source}]"
