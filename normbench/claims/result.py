"""What a claim of the claims lab ends in: its verdicts and its result. Below every claim module (speed.py,
training.py) and the registry that runs them (registry.py), so that a claim builds its result without importing the
module that imports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from normbench.store.records import utc_now

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE = "holds here", "does not hold here", "inconclusive here"


@dataclass
class ClaimResult:
    id: str
    claim: str
    source: str
    measured: str
    verdict: str
    device: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "threads": torch.get_num_threads(), "measured_utc": utc_now()}
