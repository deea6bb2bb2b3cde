"""When a benchmark figure is trusted: the parent's clock, the output check and the roofline.

An implementation is timed in a process of its own (normbench.bench.isolated), and everything that process reports,
its clock included, is the plugin's to forge: a LayerNorm that patched ``time.perf_counter`` at import to hide 90%
of its forward was published 10x faster than torch. So the benchmark process, which never imports a plugin, times
each block of timed rounds on its own wall clock, around the request and the reply. Its clock can only read
*longer* than the child's honest clock (it also sees the two wake-ups and messages of the block, and any time the
scheduler gives another process between them), never shorter, so the test is one-sided: a figure is untrusted when
the time the child accounts for is clearly below what the parent saw.

The bound, `CLOCK_BOUND` = 0.7: the child must account for at least 70% of the parent's time for the blocks, after
the parent subtracts its measured cost of an empty block (the median of a few round trips that run nothing). A
block lasts up to `BLOCK_MIN_S` of work (shorter only where its fresh inputs would need more than 512 MiB, which
leaves rounds of several ms each), so a correct implementation is flagged only if the parent saw 43% more than the
child over all its blocks together: 86 ms of unexplained delay per 200 ms block beyond a typical empty round trip.
What the parent alone sees is two wake-ups and two small messages per block; on a 2-core machine at load 8 a
wake-up waits for a CPU up to a scheduler period (tens of ms: measured here, 50 ms blocks at load 7.7 read 0.77 to
1.06 for torch.nn.LayerNorm, hence blocks of 200 ms). A plugin hiding half its time reads at most 0.5 whatever the
load: the load only lowers an honest plugin's ratio, and a hiding one's is at most its reported fraction. The
ratio is taken over the sum of the blocks, not block by block: one block hit by a long preemption then cannot
flag a correct implementation, and a plugin gains nothing worth having by hiding time in a few blocks only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: the least fraction of the parent's time (less the empty-block overhead) the child's clock must account for
CLOCK_BOUND = 0.7
#: the least work (seconds, by the parent's clock after the first block) in one timed block, and in all of a case
BLOCK_MIN_S = 0.2


@dataclass(frozen=True)
class Block:
    """One block of timed rounds: what the child's clock accounts for, and the parent's wall clock around it."""

    child_s: float
    parent_s: float


def clock_agreement(blocks: Sequence[Block], overhead_s: float, bound: float = CLOCK_BOUND) -> dict[str, Any]:
    """How the child's clock compares with the parent's over `blocks`, each less `overhead_s` (the parent's cost of an
    empty block); `agree` is False when the child accounts for less than `bound` of the parent's time."""
    if not blocks:
        raise ValueError("clock_agreement needs at least one timed block")
    if overhead_s < 0 or not math.isfinite(overhead_s):
        raise ValueError(f"the empty-block overhead must be a finite number >= 0, got {overhead_s!r}")
    child = sum(b.child_s for b in blocks)
    work = [max(b.parent_s - overhead_s, 0.0) for b in blocks]
    parent = sum(work)
    ratio = child / parent if parent > 0 else math.inf
    per_block = [b.child_s / w if w > 0 else math.inf for b, w in zip(blocks, work, strict=True)]
    return {"child_s": child, "parent_s": parent, "overhead_s": overhead_s, "blocks": len(blocks),
            "ratio": ratio, "min_block_ratio": min(per_block), "bound": bound,
            "agree": bool(math.isfinite(child) and child >= 0 and ratio >= bound)}


def clock_reason(check: Mapping[str, Any]) -> str | None:
    """Why a figure is untrusted by the parent's clock, or None."""
    if check.get("agree", True):
        return None
    return (f"the implementation's process accounted for {check['child_s'] * 1e3:.1f} ms of timed work in blocks "
            f"that took {check['parent_s'] * 1e3:.1f} ms on the benchmark process's clock ({check['ratio']:.0%} < "
            f"{check['bound']:.0%}): its clock was slowed or time was hidden from it")


def output_reason(check: Mapping[str, Any] | None) -> str | None:
    """Why a figure is untrusted by the output check (a timed call's output against the float64 truth), or None."""
    if not check or not check.get("applied") or not check.get("failed"):
        return None
    return (f"a timed call's output differs from the float64 truth in {check['failed']} of {check['rounds']} rounds "
            f"({check.get('worst', '')}): a cached, stale or lazy result is not a measurement of the norm")


def beyond_roofline(entry: Mapping[str, Any]) -> bool:
    """Above the roofline that bounds it beyond the measurement noise: even the case's bandwidth at its slow quartile
    (q3 of the times) exceeds the level's copy bandwidth at its fast quartile. A median a few percent above 100%
    inside both spreads is noise on a shared machine, not a case faster than a copy."""
    return bool(entry.get("roofline_gbps_q3")) and entry["gbps_q1"] > entry["roofline_gbps_q3"]


def roofline_reason(entry: Mapping[str, Any]) -> str | None:
    if not beyond_roofline(entry):
        return None
    return (f"{entry['gbps_q1']:.1f} GB/s at its slow quartile is above the {entry['roofline_level']} copy roofline "
            f"({entry['roofline_gbps_q3']:.1f} GB/s at its fast quartile): faster than a copy of its own bytes")


def untrusted_reason(entry: Mapping[str, Any]) -> str | None:
    """Every reason the figure of a record entry is untrusted, joined, or None: above its roofline, disagreeing with
    the parent's clock (entry["clock_check"]), or a wrong output (entry["output_check"])."""
    reasons = [r for r in (roofline_reason(entry), clock_reason(entry.get("clock_check") or {}),
                           output_reason(entry.get("output_check"))) if r]
    return "; ".join(reasons) or None


def is_untrusted(entry: Mapping[str, Any]) -> bool:
    """A stored figure that must be marked and never ranked."""
    return bool(entry.get("untrusted"))


def trusted(entries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in entries if not is_untrusted(e)]


def merge_clock_checks(checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The clock check of a case over every pass of --bench-rounds: the sums of the passes' times, their ratio."""
    if len(checks) == 1:
        return dict(checks[0])
    child = sum(c["child_s"] for c in checks)
    parent = sum(c["parent_s"] for c in checks)
    bound = min(c["bound"] for c in checks)
    ratio = child / parent if parent > 0 else math.inf
    return {"child_s": child, "parent_s": parent, "overhead_s": statistics.median(c["overhead_s"] for c in checks),
            "blocks": sum(c["blocks"] for c in checks), "ratio": ratio,
            "min_block_ratio": min(c["min_block_ratio"] for c in checks), "bound": bound,
            "agree": bool(math.isfinite(child) and ratio >= bound), "passes": len(checks)}


def merge_output_checks(checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The output check of a case over every pass: rounds and failures summed, the first failure kept."""
    applied = [c for c in checks if c.get("applied")]
    if not applied:
        return dict(checks[-1]) if checks else {"applied": False, "reason": "no pass was timed"}
    merged = dict(applied[0])
    merged["rounds"] = sum(c["rounds"] for c in applied)
    merged["failed"] = sum(c["failed"] for c in applied)
    merged["worst"] = next((c["worst"] for c in applied if c.get("worst")), "")
    return merged
