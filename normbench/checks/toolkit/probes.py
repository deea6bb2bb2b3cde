"""The inputs a check runs on: reproducible probes (an input case and its constructor parameters), the hypothesis
strategy that draws more of them, the counterexample a failing one is recorded as, and the forwards that leave
the module as it was."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from hypothesis import strategies as st
from torch import nn

from normbench.checks.base import CheckContext
from normbench.inputs import Case, case_strategy, input_shape


class Described(Protocol):
    """A probe that says what it is as plain data (Probe, or a check's own kind, as invariance's PadProbe)."""

    def as_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Probe:
    """A reproducible input and the constructor parameters it runs with."""

    case: Case
    params: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.case.as_dict(), "params": dict(self.params)}


def feature_probes(ctx: CheckContext, batch: int = 4, length: int = 3, domain: str = "normal",
                   ranks: Sequence[int] | None = None) -> list[Probe]:
    """One deterministic probe per feature count of the spec, cycling through the layout's ranks."""
    layout = ctx.spec.layout
    ranks = tuple(ranks or layout.ranks)
    out = []
    for i, c in enumerate(ctx.spec.features):
        shape = input_shape(layout, batch=batch, features=c, rank=ranks[i % len(ranks)], length=length)
        out.append(Probe(Case(shape, domain, seed=ctx.seed + i), tuple(ctx.params().items())))
    return out


def probe_strategy(ctx: CheckContext, domains: tuple[str, ...] = ("normal", "scaled")) -> st.SearchStrategy[Probe]:
    """Probes hypothesis draws: shapes of the spec's layout and feature counts, values of `domains`."""
    params = tuple(ctx.params().items())
    return st.builds(lambda case: Probe(case, params), case_strategy(ctx.spec.layout, ctx.spec.features, domains))


def counterexample(ctx: CheckContext, probe: Described, **extra: Any) -> dict[str, Any]:
    """What reproduces a failing probe: its input and parameters, the item's dtype and mode, and `extra`."""
    return {**probe.as_dict(), "dtype": ctx.dtype_name, "mode": ctx.mode, **extra}


def fresh_forward(ctx: CheckContext, module: nn.Module, x: torch.Tensor,
                  pad: torch.Tensor | None = None) -> tuple[torch.Tensor, nn.Module]:
    """Forward on a deep copy of `module` (same state every call); returns the output and the copy."""
    clone = copy.deepcopy(module)
    with torch.no_grad():
        y = ctx.forward(clone, x, pad_mask=pad)
    return y, clone


def tokens_view(ctx: CheckContext, t: torch.Tensor) -> torch.Tensor:
    """(B, T, C) view of a sequence tensor whatever the layout: channel-first (N, C, L) is transposed."""
    return t if ctx.spec.layout.features_axis in (-1, t.dim() - 1) else t.transpose(1, 2)
