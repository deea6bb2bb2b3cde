"""One verdict vocabulary, said the same way by the terminal, LEADERBOARD.md / .html / CSV, the site, the badges and
the ranking, so no two of them disagree: every publisher asks this module, none compares verdict strings on its own.

An item's outcome falls in exactly one group, and every count is of these groups:

- judged: ``pass``, ``fail``, ``xfail``, ``report`` (the property was measured against the spec);
- skipped: ``skip`` (not applicable here, with the reason: no float64 path, no CUDA device, ...);
- errors: ``error`` (no verdict: a crash, a timeout, tampering, an unusable result);
- not judged: ``unjudged`` and anything else (planned, but no verdict in that run: fail closed).

``planned = judged + skipped + errors + not judged``; *failing* = ``fail`` + ``error``; *known* = ``xfail``
(a failure declared in a known-failures file, with its reason; never an error). An *inherited* known failure is a
known failure of a torch op the implementation calls (its outcome names the op in ``inherited_from``; see
normbench.known_failures): counted among the known, and said as inherited wherever they are counted.

An implementation's status, the first that applies:

=============  =====================================  ======================================================
key            said as                                when
=============  =====================================  ======================================================
``failing``    does not conform (N failing)           any item failed or errored
``unjudged``   not judged                             an item planned but not judged, or nothing judged
``known``      conforms with N known failure(s)       every failure is a declared known failure
``conforms``   conforms                               every judged item met the spec
=============  =====================================  ======================================================

Known failures rank among the conforming implementations (see normbench.board.ranking), always marked.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """One item's verdict. Each value is the string records store: a member is that string (equal to it, hashed as
    it, and written by json as it), so an outcome holding a member serializes byte for byte as one holding the
    string, and a stored outcome read back compares equal to the member."""

    PASS = "pass"
    FAIL = "fail"
    #: a declared known failure
    XFAIL = "xfail"
    #: measured and reported, never a failure
    REPORT = "report"
    SKIP = "skip"
    #: no verdict: a crash, a timeout, tampering, an unusable result
    ERROR = "error"
    #: planned but not judged in that run
    UNJUDGED = "unjudged"


def plain(value: Any) -> Any:
    """`value` with every Verdict member as its plain string: for what leaves this process through a serializer
    that takes builtin types only (xdist's execnet refuses any other class, a str subclass too)."""
    if isinstance(value, Verdict):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    return value


#: item verdicts in each group
JUDGED = (Verdict.PASS, Verdict.FAIL, Verdict.XFAIL, Verdict.REPORT)
SKIPPED = (Verdict.SKIP,)
ERRORS = (Verdict.ERROR,)
#: verdicts that make an implementation not conform (an error is never excused by a known failure)
FAILING = (Verdict.FAIL, Verdict.ERROR)
KNOWN = (Verdict.XFAIL,)
#: the outcome field naming the torch op whose known failure an ``xfail`` item inherits
INHERITED = "inherited_from"
#: one item's verdict in words, where a page or a line names it
ITEM_WORDS = {Verdict.PASS: "pass", Verdict.FAIL: "fail", Verdict.ERROR: "error (no verdict)",
              Verdict.XFAIL: "known failure", Verdict.REPORT: "reported", Verdict.SKIP: "skipped",
              Verdict.UNJUDGED: "not judged"}

CONFORMS, KNOWN_ONLY, NOT_JUDGED, NOT_CONFORMING = "conforms", "known", "unjudged", "failing"
#: the words of each status, as every publisher prints them
WORDS = {CONFORMS: "conforms", KNOWN_ONLY: "conforms with known failures", NOT_JUDGED: "not judged",
         NOT_CONFORMING: "does not conform"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "item")`` -> "1 item", ``plural(2, "item")`` -> "2 items"; `many` for irregular words."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def group(verdict: Any) -> str:
    """The group of one item's verdict: judged, skipped, errors or unjudged."""
    if verdict in JUDGED:
        return "judged"
    if verdict in SKIPPED:
        return "skipped"
    if verdict in ERRORS:
        return "errors"
    return "unjudged"


@dataclass(frozen=True)
class Counts:
    """How many of an implementation's (or a run's) planned items fell in each group."""

    planned: int = 0
    judged: int = 0
    skipped: int = 0
    errors: int = 0
    unjudged: int = 0
    #: of the judged: `fail` items, and declared known failures (`xfail`)
    failed: int = 0
    known: int = 0
    #: of the known: those inherited from a torch op the implementation calls
    inherited: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[Mapping[str, Any]]) -> Counts:
        outcomes = list(outcomes)
        verdicts = [o.get("verdict") for o in outcomes]
        groups = [group(v) for v in verdicts]
        return cls(planned=len(verdicts), judged=groups.count("judged"), skipped=groups.count("skipped"),
                   errors=groups.count("errors"), unjudged=groups.count("unjudged"),
                   failed=verdicts.count(Verdict.FAIL), known=sum(v in KNOWN for v in verdicts),
                   inherited=sum(bool(inherited_from(o)) for o in outcomes))

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, ...]:
        return (self.planned, self.judged, self.skipped, self.errors, self.unjudged, self.failed, self.known,
                self.inherited)

    @property
    def known_text(self) -> str:
        """"2 known failures", or "2 known failures, 1 inherited" where some are a torch op's."""
        inherited = f", {self.inherited} inherited" if self.inherited else ""
        return plural(self.known, "known failure") + inherited

    @property
    def failing(self) -> int:
        return self.failed + self.errors

    def describe(self) -> str:
        """The one definition of an item count, e.g. "46 items: 43 judged, 3 skipped" (zero groups left out,
        judged always said)."""
        parts = [f"{self.judged} judged"]
        parts += [f"{self.skipped} skipped"] if self.skipped else []
        parts += [plural(self.errors, "error") + " (no verdict)"] if self.errors else []
        parts += [f"{self.unjudged} not judged"] if self.unjudged else []
        return f"{plural(self.planned, 'item')}: " + ", ".join(parts)


@dataclass(frozen=True)
class Status:
    """An implementation's conformance, said one way everywhere."""

    key: str  # CONFORMS, KNOWN_ONLY, NOT_JUDGED or NOT_CONFORMING
    counts: Counts

    @property
    def conforming(self) -> bool:
        """Conforms, possibly with known failures: what the ranking's conforming tiers hold."""
        return self.key in (CONFORMS, KNOWN_ONLY)

    @property
    def text(self) -> str:
        """The full verdict: "conforms", "conforms with 2 known failures", "does not conform (3 failing,
        1 known failure, 4 not judged)", "not judged (4 of 46 items)"."""
        c = self.counts
        if self.key == CONFORMS:
            return "conforms"
        if self.key == KNOWN_ONLY:
            return f"conforms with {c.known_text}"
        if self.key == NOT_CONFORMING:
            extra = [c.known_text] if c.known else []
            extra += [f"{c.unjudged} not judged"] if c.unjudged else []
            return f"does not conform ({', '.join([f'{c.failing} failing', *extra])})"
        if c.unjudged:
            return f"not judged ({c.unjudged} of {plural(c.planned, 'item')})"
        if c.skipped and c.skipped == c.planned:
            return f"not judged ({'the item' if c.planned == 1 else f'all {c.planned} items'} skipped)"
        return "not judged"

    @property
    def short(self) -> str:
        """The same verdict in a badge's or a matrix column's width: "conforms", "conforms, 2 known failures",
        "3 failing", "not judged"."""
        c = self.counts
        if self.key == KNOWN_ONLY:
            return f"conforms, {plural(c.known, 'known failure')}"
        if self.key == NOT_CONFORMING:
            return f"{c.failing} failing"
        return WORDS[self.key]


def inherited_from(outcome: Mapping[str, Any]) -> str | None:
    """The torch op whose known failure this item inherits ("torch F.layer_norm (aten.native_layer_norm)"), or
    None: only a known failure (``xfail``) inherits."""
    source = outcome.get(INHERITED)
    return str(source) if source and outcome.get("verdict") in KNOWN else None


def item_words(outcome: Mapping[str, Any]) -> str:
    """One item's verdict in words: "pass", "known failure", "known failure, inherited from torch F.layer_norm
    (aten.native_layer_norm)", ..."""
    verdict = outcome.get("verdict")
    words = ITEM_WORDS.get(str(verdict), str(verdict))
    source = inherited_from(outcome)
    return f"{words}, inherited from {source}" if source else words


def status_of(outcomes: Iterable[Mapping[str, Any]]) -> Status:
    """Fail closed: conforms only when something was judged, nothing failed or errored and nothing planned went
    unjudged; known failures alone give "conforms with N known failures"."""
    c = Counts.of(list(outcomes))
    if c.failing:
        return Status(NOT_CONFORMING, c)
    if c.unjudged or not c.judged:
        return Status(NOT_JUDGED, c)
    if c.known:
        return Status(KNOWN_ONLY, c)
    return Status(CONFORMS, c)


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """" (did you mean 'torch.nn.LayerNorm'?)" for the closest known names, or "" when none is close. Matched
    case-insensitively (a wrong capital still finds its name); a clear best match is named alone; with no close
    match, the names that contain the one given (``LayerNorm`` -> ``torch.nn.LayerNorm``, ...) if there are few."""
    lowered = {k.lower(): k for k in sorted(set(known))}
    query = name.lower()
    ratio = {k: difflib.SequenceMatcher(None, query, k).ratio() for k in difflib.get_close_matches(
        query, list(lowered), n=n, cutoff=0.6)}
    close = [k for k in ratio if ratio[k] >= max(ratio.values()) - 0.08]
    if not close:
        close = [k for k in lowered if query in k]
        close = close if 0 < len(close) <= n else []
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(lowered[c]) for c in close)}?)"
