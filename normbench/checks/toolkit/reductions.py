"""What shares one statistic: how many elements one output's reduction covers, and which elements those are."""

from __future__ import annotations

import math
from typing import Any

import torch

from normbench.spec import Spec


def reduction_length(spec: Spec, shape: tuple[int, ...], num_groups: int | None = None) -> int:
    """How many elements share one statistic: the length of the reduction behind each output."""
    numel = 1
    for s in shape:
        numel *= s
    if not numel:
        return 1
    axis = spec.layout.features_axis
    c = shape[axis]
    if spec.layout.reduce == "token":
        return c
    batch = shape[0]
    spatial = numel // (batch * c)
    if spec.layout.reduce == "channel":
        return batch * spatial
    if spec.layout.reduce == "instance":
        return spatial
    groups = num_groups or 1
    return (c // groups) * spatial


def weight_reduction_length(spec: Spec, shape: tuple[int, ...]) -> int:
    """How many terms are summed into each dγ/dβ element: every element of one channel."""
    numel = 1
    for s in shape:
        numel *= s
    c = shape[spec.layout.features_axis]
    return max(1, numel // max(c, 1))


def num_groups_of(params: dict[str, Any]) -> int | None:
    """The num_groups constructor parameter as an int, or None for a family without groups."""
    value = params.get("num_groups")
    return int(value) if value is not None else None


def statistic_groups(spec: Spec, v: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """`v` (float64) rearranged as (groups, members): each row the elements that share one statistic."""
    axis = spec.layout.features_axis % v.dim()
    c = v.shape[axis]
    last = v.movedim(axis, -1)
    reduce = spec.layout.reduce
    if reduce == "token":
        return last.reshape(-1, c)
    if reduce == "channel":
        return last.reshape(-1, c).T
    n = v.shape[0]
    if reduce == "instance":
        return last.reshape(n, -1, c).permute(0, 2, 1).reshape(n * c, -1)
    groups = int(params.get("num_groups") or 1)
    return last.reshape(n, -1, groups, c // groups).permute(0, 2, 1, 3).reshape(n * groups, -1)


def per_element(spec: Spec, shape: tuple[int, ...], values: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """One value per statistic group (in `statistic_groups`' order) spread over the elements of an input of `shape`
    that share that statistic: the inverse of `statistic_groups`' rearrangement, as a contiguous tensor."""
    axis = spec.layout.features_axis % len(shape)
    c = shape[axis]
    last = (*shape[:axis], *shape[axis + 1:], c)  # the layout statistic_groups rearranges: features last
    reduce = spec.layout.reduce
    if reduce == "token":
        spread = values.reshape(last[:-1]).unsqueeze(-1).expand(last)
    elif reduce == "channel":
        spread = values.expand(last)
    else:
        n = shape[0]
        groups = c if reduce == "instance" else int(params.get("num_groups") or 1)
        grouped = (n, math.prod(last[1:-1]), groups, c // groups)
        spread = values.reshape(n, 1, groups, 1).expand(grouped).reshape(last)
    return spread.movedim(-1, axis).contiguous()


def rounding_condition(spec: Spec, v: torch.Tensor, params: dict[str, Any]) -> float:
    """κ = max over statistic groups of max|v|/σ: how much a relative rounding of the inputs is magnified
    by centring and normalizing. inf when a group has no spread."""
    g = statistic_groups(spec, v.detach().to(torch.float64).cpu(), params)
    if g.numel() == 0 or g.shape[1] == 0:
        return 0.0
    sigma = g.std(dim=1, unbiased=False)
    peak = g.abs().amax(dim=1)
    if bool((sigma == 0).any()):
        return math.inf
    return float((peak / sigma).max().item())
