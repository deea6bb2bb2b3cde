"""Machines named by what they are ("AMD EPYC · 2 cores · torch 2.13.0+cpu"), not by the leaderboard's column
tokens M1, M2, ...: the site shows a visitor which machine measured a figure, in words it knows.

The words come from the board's machine description (normbench.board.model: device, cores, torch, CUDA, then the
normbench commit and the last record's time); two machines that read alike keep their machine id beside them.
"""

from __future__ import annotations

import re
from collections import Counter

from normbench.board.model import Machine

_SEP = " · "
_LAST = re.compile(r"last record (\d{4}-\d\d-\d\d)T(\d\d:\d\d)")


def _what(machine: Machine) -> str:
    parts = machine.description.split(_SEP)
    what = [p for p in parts if not p.startswith(("normbench ", "last record "))]
    return _SEP.join(what) if what and what[0] not in ("", "None") else machine.machine_id


def machine_labels(machines: list[Machine]) -> dict[str, str]:
    """Machine id -> what the machine is: device, cores, torch (and CUDA) version."""
    what = {m.machine_id: _what(m) for m in machines}
    seen = Counter(what.values())
    return {mid: label if seen[label] == 1 or label == mid else f"{label} ({mid})" for mid, label in what.items()}


def last_record(machine: Machine) -> str | None:
    """When the machine's latest record was written ("2026-12-03 14:45 UTC"), from its description."""
    found = _LAST.search(machine.description)
    return f"{found.group(1)} {found.group(2)} UTC" if found else None


def relabel(text: str, machines: list[Machine], labels: dict[str, str]) -> str:
    """A table header or title that names a machine by its token ("GB/s [M2]", "… on M1") with its label instead."""
    by_token = {m.label: labels[m.machine_id] for m in machines}
    if not by_token:
        return text
    # one pass, so a label that itself reads like a token ("Apple M2 · 8 cores" for M1) is never replaced again
    tokens = "|".join(sorted(map(re.escape, by_token), key=len, reverse=True))
    return re.sub(rf"(?<!\w)(?:{tokens})(?!\w)", lambda found: by_token[found.group(0)], text)
