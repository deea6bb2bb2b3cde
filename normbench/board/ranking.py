"""The combined ranking per family: tiers first (a non-conforming or unbenchmarked implementation never ranks
above a conforming, benchmarked one), then the geometric mean of % roofline."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from normbench import deploy
from normbench.board.accuracy import ACCURACY_CHECKS
from normbench.board.model import Machine, Table, column
from normbench.board.performance import UNTRUSTED_NOTE, bench_index, geomean, speedup, untrusted_text
from normbench.verdicts import NOT_CONFORMING, status_of

#: tiers of the per-family ranking: a lower tier always ranks first (references are the truth, outside the tiers).
#: "conforms" includes an implementation whose only failures are declared known failures (marked in its status).
TIERS = {0: "conforms", 1: "conforms, not benchmarked", 2: "not judged", 3: "does not conform"}


def is_reference(name: str, outcomes: Iterable[dict[str, Any]] = ()) -> bool:
    """A float64 reference is the truth the others are judged against, never a contender.

    The built-in references are named ``reference.<family>``; a record that carries the implementation's tags
    (``"tags": ["reference", ...]``) is honoured as well.
    """
    return name.startswith("reference.") or any("reference" in (o.get("tags") or ()) for o in outcomes)


def ranking_table(machines: list[Machine], outcomes: dict[str, list[dict[str, Any]]],
             bench: dict[str, list[dict[str, Any]]]) -> Table:
    # Keyed by (family, implementation): a name registered in two families is ranked in each on its own results.
    verdicts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for os_ in outcomes.values():
        for o in os_:
            verdicts[(o["family"], o["implementation"])].append(o)
    keys = set(verdicts)
    perf: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    speed: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    untrusted: dict[tuple[str, str], int] = defaultdict(int)
    for mid, entries in bench.items():
        index = bench_index(entries)
        for e in entries:
            if e["family"] == "roofline" or deploy.record_name(e) != deploy.DEFAULT.name:
                continue  # the ranking is of the implementations as written; compiled / exported timings are shown
            key = (e["family"], e["implementation"])
            keys.add(key)
            if e.get("untrusted"):
                untrusted[key] += 1  # shown, never ranked: the parent's clock did not confirm the child's
                continue
            perf[(*key, mid)].append(e)
            s = speedup(e, index)
            if s is not None:
                speed[(*key, mid)].append(s)
    ranked: list[tuple[tuple[Any, ...], list[Any]]] = []
    for family, impl in keys:
        os_ = verdicts.get((family, impl), [])
        benchmarked = any(perf.get((family, impl, m.machine_id)) for m in machines)
        verdict = status_of(os_)
        if is_reference(impl, os_):
            tier, status = -1, "reference (the float64 truth, not ranked)"
        elif verdict.conforming:
            # known failures alone rank with the conforming (declared, documented, shown in the status)
            tier, status = (0, verdict.text) if benchmarked else (1, f"{verdict.text}, not benchmarked")
        else:
            tier, status = (3 if verdict.key == NOT_CONFORMING else 2), verdict.text
        if untrusted[(family, impl)]:
            status += f"; {untrusted_text(untrusted[(family, impl)])}"
        accuracy = max((float(o["metrics"]["tol_ratio"]) for o in os_ if o.get("check") in ACCURACY_CHECKS
                        and isinstance((o.get("metrics") or {}).get("tol_ratio"), int | float)), default=None)
        cols: list[Any] = []
        roofs = []
        for m in machines:
            g = geomean(e["roofline_pct"] for e in perf.get((family, impl, m.machine_id), []))
            roofs.append(g)
            cols += [g, geomean(speed.get((family, impl, m.machine_id), [])),
                     len(perf.get((family, impl, m.machine_id), []))]
        score = geomean(r for r in roofs if r is not None)
        ranked.append(((family, tier, -(score or 0.0), impl), [impl, family, status, accuracy, *cols]))
    ranked.sort(key=lambda kv: kv[0])
    rows: list[list[Any]] = []
    rank, family_of_rank = 0, None
    for (family, tier, _, _), row in ranked:
        if family != family_of_rank:
            rank, family_of_rank = 0, family
        if tier < 0:
            rows.append(["truth", *row])
        else:
            rank += 1
            rows.append([rank, *row])
    headers = ["rank", "implementation", "family", "conformance", "worst error / tolerance"]
    for m in machines:
        headers += [column(h, m, machines) for h in ("geomean % roofline", "geomean × baseline", "cases")]
    return Table("ranking", "Combined ranking, per family", headers, rows,
                 ["Ranked within each family only (a LayerNorm is not a contender of an RMSNorm); the family's "
                  "float64 reference is listed first as the truth the others are judged against, not ranked. "
                  "Tiers first: conforms and benchmarked, then conforms but not benchmarked, then not judged, then "
                  "does not conform, so a non-conforming or unbenchmarked implementation never ranks above a "
                  "conforming, benchmarked one. An implementation whose only failures are declared known failures "
                  "(each with its reason, e.g. torch's CPU LayerNorm dγ / dβ in half precision) ranks with the "
                  "conforming ones, marked \"conforms with N known failures\": the failure is documented and "
                  "shown, not hidden, and an error is never excused. Within a tier by the geometric mean of % "
                  "roofline over every benchmarked case (over the machines' geometric means where there are "
                  "several). × baseline is the "
                  "geometric mean speed-up over the family's torch eager implementation. " + UNTRUSTED_NOTE])


