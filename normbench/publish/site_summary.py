"""The front page's answer per family: who conforms, who conforms with known failures, who does not, who was not
judged, who is fastest, and the family's references apart (normbench's float64 truth: listed, never counted as a
conforming implementation and never a contender). Said in normbench.verdicts' words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from normbench.board.ranking import is_reference
from normbench.publish.site_perf import Speed, fastest
from normbench.verdicts import CONFORMS, KNOWN_ONLY, NOT_CONFORMING, NOT_JUDGED, status_of

#: the families most models use, first on the front page (what a visitor comes for), with the name a visitor knows
LEAD_FAMILIES = {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm", "batchnorm": "BatchNorm", "groupnorm": "GroupNorm"}


@dataclass(frozen=True)
class Member:
    name: str
    href: str
    status: str  # a normbench.verdicts status key
    verdict: str  # its words: "conforms with 2 known failures", ...


@dataclass
class FamilySummary:
    name: str
    title: str
    href: str
    conforming: list[Member] = field(default_factory=list)
    known: list[Member] = field(default_factory=list)
    failing: list[Member] = field(default_factory=list)
    unjudged: list[Member] = field(default_factory=list)
    references: list[Member] = field(default_factory=list)
    #: the fastest conforming implementation (known failures included, as in the ranking), by trusted figures
    fastest: Speed | None = None
    fastest_verdict: str = ""
    fastest_href: str = ""
    #: a faster one that does not conform (or was not judged), where there is one: fast, but not to be used
    faster_unfit: Speed | None = None
    faster_unfit_verdict: str = ""
    faster_unfit_href: str = ""
    benchmarked: int = 0
    #: figures of the family whose timing cannot be trusted (shown marked, never ranked)
    untrusted: int = 0

    @property
    def implementations(self) -> int:
        """Contenders only: the references are the truth they are judged against."""
        return len(self.conforming) + len(self.known) + len(self.failing) + len(self.unjudged)

    @property
    def lead(self) -> bool:
        return self.name in LEAD_FAMILIES


def summarize(family: str, href: str, members: set[str], outcomes: dict[str, list[dict[str, Any]]],
              links: dict[str, str], speed: dict[str, Speed]) -> FamilySummary:
    summary = FamilySummary(family, LEAD_FAMILIES.get(family, family), href)
    groups = {CONFORMS: summary.conforming, KNOWN_ONLY: summary.known, NOT_CONFORMING: summary.failing,
              NOT_JUDGED: summary.unjudged}
    verdicts = {}
    for name in sorted(members):
        status = status_of(outcomes.get(name, []))
        member = Member(name, links[name], status.key, status.text)
        verdicts[name] = status.text
        if is_reference(name, outcomes.get(name, [])):
            summary.references.append(member)
        else:
            groups[status.key].append(member)
    conforming = [m.name for m in summary.conforming + summary.known]
    summary.fastest = fastest(conforming, speed, outcomes)
    if summary.fastest:
        summary.fastest_verdict = verdicts[summary.fastest.implementation]
        summary.fastest_href = links[summary.fastest.implementation]
    unfit = fastest([m.name for m in summary.failing + summary.unjudged], speed, outcomes)
    if unfit is not None and (summary.fastest is None or unfit.roofline_pct > summary.fastest.roofline_pct):
        summary.faster_unfit, summary.faster_unfit_verdict = unfit, verdicts[unfit.implementation]
        summary.faster_unfit_href = links[unfit.implementation]
    contenders = {m.name for g in groups.values() for m in g}
    summary.benchmarked = sum(1 for name in contenders if name in speed)
    return summary


def family_order(families: list[str]) -> list[str]:
    """The lead families first, in the order a visitor looks for them, then the others alphabetically."""
    lead = list(LEAD_FAMILIES)
    return sorted(families, key=lambda f: (lead.index(f) if f in lead else len(lead), f))
