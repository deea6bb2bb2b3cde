"""Fold eval-mode per-channel norms into the adjacent Linear / Conv layers: ``normbench.fold(model)``.

Offline norms (BatchNorm, PN*, Unified Normalization, MABN) are, in eval, a fixed per-channel affine map
n(x) = s⊙x + t, and their selling point is that this map folds into the neighbouring layer so that inference
pays nothing for the norm (the Unified Normalization paper reports 31% faster inference than LayerNorm):

    norm after  Linear(W, b):  W' = diag(s)·W,  b' = s⊙b + t
    norm before Linear(W, b):  W' = W·diag(s),  b' = b + W·t
    Conv: the same per output channel (after) or per input channel (before). A norm *before* a padded Conv is
    not folded: the conv pads the normalized input with zeros, and s⊙0 + t ≠ 0 at the border.

`fold` returns an eval-mode deep copy with every such norm folded (replaced by a pass-through `Folded`
module that names where it went), checks the copy against the original on `example_inputs` when given, and
refuses — a `FoldError` naming every module path and the reason — when the model holds a norm that cannot
be folded: LayerNorm / RMSNorm / GroupNorm (per-token or per-sample statistics at run time), PowerNorm with
layer scale (its GroupScaling is a per-token computation), any norm in train mode (batch statistics),
BatchNorm without running statistics. ``strict=False`` leaves those in place instead, except a norm in train
mode, always refused: the copy returned is in eval mode, where that norm would compute something else.

How a norm opts in (the protocol; BatchNorm and InstanceNorm with running statistics are handled here):
  * a method ``folding_affine(self) -> (s, t)``: the per-channel scale and shift of its eval map, 1-D tensors
    of length C; it raises (any exception, with a message saying why) when the module cannot be folded in
    its present configuration, e.g. PowerNorm with GroupScaling;
  * optionally an attribute ``folding_channel_axis`` (default -1, features last; torch BatchNorm's is 1);
  * or, for classes you do not own, ``register_fold_handler(cls, fn)`` with ``fn(module) -> (s, t, axis)``.
Adjacency is found with torch.fx (norms, Linear and Conv are leaves), and, where a model does not trace, from
consecutive children of every nn.Sequential; `adjacency=` declares pairs neither can see.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ["FoldError", "FoldReport", "FoldStep", "Folded", "fold", "fold_with_report", "register_fold_handler"]


class FoldError(ValueError):
    """The model cannot be folded as asked; the message names the module path(s) and why."""


#: (s, t, channel axis of the norm's input)
Affine = tuple[torch.Tensor, torch.Tensor, int]
FoldHandler = Callable[[nn.Module], Affine]
_HANDLERS: dict[type[nn.Module], FoldHandler] = {}

#: norms that are never a fixed per-channel map, and why.
_NOT_FOLDABLE: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.LayerNorm, "LayerNorm normalizes every token with its own statistics, computed at run time: "
                   "no fixed per-channel map exists"),
    (nn.RMSNorm, "RMSNorm divides every token by its own rms, computed at run time: no fixed per-channel map "
                 "exists"),
    (nn.GroupNorm, "GroupNorm normalizes every sample with its own group statistics, computed at run time"),
    (nn.LocalResponseNorm, "LocalResponseNorm divides by a run-time sum over neighbouring channels"),
)


def register_fold_handler(cls: type[nn.Module], handler: FoldHandler) -> None:
    """Teach `fold` a norm class it cannot change: `handler(module)` returns (s, t, channel_axis) of the
    module's eval map, or raises with the reason it cannot be folded."""
    _HANDLERS[cls] = handler


@dataclass(frozen=True)
class FoldStep:
    norm: str
    into: str
    side: Literal["output", "input"]

    def __str__(self) -> str:
        where = "output" if self.side == "output" else "input"
        return f"{self.norm} -> {self.into} ({where} side)"


@dataclass
class FoldReport:
    folded: list[FoldStep] = field(default_factory=list)
    #: foldable norms left in place: (path, why) — no adjacent layer they fold into exactly.
    kept: list[tuple[str, str]] = field(default_factory=list)
    #: non-foldable norms left in place with strict=False: (path, why).
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: max |folded − original| / max |original| on the example inputs (None when none were given).
    verified_rel_error: float | None = None
    #: submodules torch.fx could not trace; inside them only nn.Sequential neighbours were found.
    untraced: list[str] = field(default_factory=list)


class Folded(nn.Module):
    """What a folded norm becomes: a pass-through that accepts the norm's extra arguments (a pad mask)."""

    def __init__(self, into: str, side: str) -> None:
        super().__init__()
        self.into, self.side = into, side

    def extra_repr(self) -> str:
        return f"into={self.into!r}, side={self.side!r}"

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


# -- recognizing norms ---------------------------------------------------------------------------------

class _Refusal(Exception):  # noqa: N818 - internal: a norm that cannot be folded, with the reason
    pass


def _batchnorm_affine(m: _BatchNorm | _InstanceNorm) -> Affine:
    if m.running_var is None or m.running_mean is None:
        raise _Refusal("track_running_stats=False: it normalizes with the statistics of each batch even in eval, "
                       "so no fixed per-channel map exists")
    s = torch.rsqrt(m.running_var.detach().double() + m.eps)
    t = -m.running_mean.detach().double() * s
    if m.weight is not None:
        w, b = m.weight.detach().double(), m.bias.detach().double()
        s, t = s * w, t * w + b
    return s, t, 1


def _is_norm(m: nn.Module) -> bool:
    return (isinstance(m, _BatchNorm | _InstanceNorm) or hasattr(m, "folding_affine")
            or any(isinstance(m, cls) for cls in _HANDLERS)
            or any(isinstance(m, cls) for cls, _ in _NOT_FOLDABLE))


def _affine(m: nn.Module) -> Affine:
    """The eval map of a norm, or _Refusal with the reason it has none."""
    name = type(m).__name__
    if m.training:
        raise _Refusal(f"{name} is in train mode, where it normalizes with the statistics of each batch: no "
                       "fixed per-channel map exists")
    for cls, handler in _HANDLERS.items():
        if isinstance(m, cls):
            try:
                return handler(m)
            except Exception as exc:
                raise _Refusal(f"{name}: {exc}") from exc
    if isinstance(m, _BatchNorm | _InstanceNorm):
        if isinstance(m, _InstanceNorm) and not m.track_running_stats:
            raise _Refusal(f"{name} without running statistics normalizes every sample with its own statistics")
        return _batchnorm_affine(m)
    if hasattr(m, "folding_affine"):
        try:
            s, t = m.folding_affine()
        except Exception as exc:  # the module says why it cannot be folded
            raise _Refusal(f"{name}: {exc}") from exc
        return s.detach().double(), t.detach().double(), int(getattr(m, "folding_channel_axis", -1))
    for cls, why in _NOT_FOLDABLE:
        if isinstance(m, cls):
            raise _Refusal(why)
    raise _Refusal(f"{name} is not a norm normbench knows how to fold")


# -- finding adjacent pairs ----------------------------------------------------------------------------

_LAYERS = (nn.Linear, _ConvNd)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_norm(m) or isinstance(m, _LAYERS) or super().is_leaf_module(m, qualname)


@dataclass(frozen=True)
class _Pair:
    norm: str
    layer: str
    side: Literal["output", "input"]  # which side of the layer the norm sits on


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _fx_pairs(module: nn.Module, prefix: str) -> tuple[list[_Pair], dict[str, int]]:
    graph = _Tracer().trace(module)
    calls: dict[str, int] = {}
    nodes = [n for n in graph.nodes if n.op == "call_module"]
    for n in nodes:
        calls[_join(prefix, str(n.target))] = calls.get(_join(prefix, str(n.target)), 0) + 1
    pairs = []
    for n in nodes:
        m = module.get_submodule(str(n.target))
        if not _is_norm(m) or not n.args or not isinstance(n.args[0], fx.Node):
            continue
        src = n.args[0]
        if (src.op == "call_module" and isinstance(module.get_submodule(str(src.target)), _LAYERS)
                and len(src.users) == 1):
            pairs.append(_Pair(_join(prefix, str(n.target)), _join(prefix, str(src.target)), "output"))
        users = list(n.users)
        if len(users) == 1 and users[0].op == "call_module" and users[0].args and users[0].args[0] is n \
                and isinstance(module.get_submodule(str(users[0].target)), _LAYERS):
            pairs.append(_Pair(_join(prefix, str(n.target)), _join(prefix, str(users[0].target)), "input"))
    return pairs, calls


def _discover(module: nn.Module, prefix: str = "") -> tuple[list[_Pair], dict[str, int], list[str]]:
    """Adjacent (norm, layer) pairs; how often each module is called where known; modules not traced."""
    try:
        pairs, calls = _fx_pairs(module, prefix)
        return pairs, calls, []
    except Exception:  # data-dependent control flow and the like: look inside, and at Sequential order
        pass
    pairs, calls, untraced = [], {}, [prefix or "<model>"]
    children = list(module.named_children())
    if isinstance(module, nn.Sequential):
        for (na, a), (nb, b) in zip(children, children[1:]):
            if isinstance(a, _LAYERS) and _is_norm(b):
                pairs.append(_Pair(_join(prefix, nb), _join(prefix, na), "output"))
            if _is_norm(a) and isinstance(b, _LAYERS):
                pairs.append(_Pair(_join(prefix, na), _join(prefix, nb), "input"))
    for name, child in children:
        if _is_norm(child) or isinstance(child, _LAYERS):
            continue
        p, c, u = _discover(child, _join(prefix, name))
        pairs += p
        calls.update(c)
        untraced += u
    return pairs, calls, untraced


# -- the folding arithmetic ----------------------------------------------------------------------------

def _axis_ok(layer: nn.Module, axis: int, rank: int | None) -> str | None:
    """None when the norm's channel axis is the layer's feature axis, else why not."""
    if rank is not None:
        axis = axis % rank
        wanted = rank - 1 if isinstance(layer, nn.Linear) else 1
    else:
        # Unknown rank (no example input): a channel-axis-1 norm next to a Linear (BatchNorm1d) only runs on
        # (N, C) inputs, where axis 1 is the last one.
        wanted = axis if isinstance(layer, nn.Linear) and axis in (1, -1) else 1
    if axis == wanted:
        return None
    kind = "Linear's feature axis" if isinstance(layer, nn.Linear) else "Conv's channel axis 1"
    return f"its channel axis {axis} is not the {kind} (input rank {rank})"


def _fold_pair(norm: nn.Module, layer: nn.Module, side: str, affine: Affine, rank: int | None) -> str | None:
    """Fold in place; returns None, or why this pair cannot be folded exactly (nothing changed then)."""
    s, t, axis = affine
    why = _axis_ok(layer, axis, rank)
    if why:
        return why
    w = layer.weight
    size = w.shape[0] if side == "output" else (layer.in_features if isinstance(layer, nn.Linear)
                                                 else layer.in_channels)
    if s.shape != (size,) or t.shape != (size,):
        return f"its scale has shape {tuple(s.shape)}, the layer has {size} {side} channels"
    w64 = w.detach().double()
    b64 = layer.bias.detach().double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    s, t = s.to(w64.device), t.to(w64.device)
    extra = (1,) * (w64.dim() - 2)
    if side == "output":
        new_w = w64 * s.reshape(-1, 1, *extra)
        new_b = s * b64 + t
    elif isinstance(layer, nn.Linear):
        new_w = w64 * s.reshape(1, -1)
        new_b = b64 + w64 @ t
    else:
        pad = layer.padding
        if layer.padding_mode != "zeros" or (pad != "valid" and any(p != 0 for p in (pad if isinstance(
                pad, tuple) else (pad,)))):
            return (f"it sits before a padded Conv (padding={pad}, mode {layer.padding_mode!r}): the conv pads the "
                    "normalized input, and s*0 + t != 0 at the border, so the fold would not be exact")
        per_group = layer.in_channels // layer.groups
        out_per_group = layer.out_channels // layer.groups
        group_of_out = torch.arange(layer.out_channels) // out_per_group
        channel = group_of_out[:, None] * per_group + torch.arange(per_group)[None, :]  # (out, in/groups)
        s_oi, t_oi = s[channel], t[channel]
        new_w = w64 * s_oi.reshape(*s_oi.shape, *extra)
        new_b = b64 + (w64 * t_oi.reshape(*t_oi.shape, *extra)).flatten(1).sum(dim=1)
    with torch.no_grad():
        w.copy_(new_w.to(w.dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(new_b.to(dtype=w.dtype, device=w.device), requires_grad=w.requires_grad)
        else:
            layer.bias.copy_(new_b.to(layer.bias.dtype))
    return None


# -- public API ----------------------------------------------------------------------------------------

def _as_args(example_inputs: Any) -> tuple[Any, ...]:
    if example_inputs is None:
        return ()
    return tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)


def _input_ranks(model: nn.Module, norms: Sequence[str], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> dict[str, int]:
    ranks: dict[str, int] = {}
    handles = []
    for path in norms:
        def hook(_m: nn.Module, inputs: tuple[Any, ...], path: str = path) -> None:
            if inputs and isinstance(inputs[0], torch.Tensor):
                ranks[path] = inputs[0].dim()
        handles.append(model.get_submodule(path).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return ranks


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flat_tensors(v)]
    if isinstance(out, tuple | list):
        return [t for v in out for t in _flat_tensors(v)]
    return []


def _verify(original: nn.Module, folded: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
            rtol: float | None) -> float:
    with torch.no_grad():
        want, got = _flat_tensors(original(*args, **kwargs)), _flat_tensors(folded(*args, **kwargs))
    if len(want) != len(got):
        raise FoldError("the folded model returns a different structure than the original")
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            raise FoldError(f"output {i}: shape {tuple(a.shape)} after folding, {tuple(b.shape)} before")
        if not b.is_floating_point():
            continue
        scale = float(b.detach().abs().max()) if b.numel() else 0.0
        err = float((a.double() - b.double()).abs().max()) if b.numel() else 0.0
        rel = err / scale if scale else err
        worst = max(worst, rel)
        # Folding reassociates s*(W x) into (s*W) x: a few roundings of the dtype per output, scaled by the
        # reduction length of the layers; 1e3 eps covers models of a few layers (fp32: 1.2e-4).
        limit = rtol if rtol is not None else 1e3 * torch.finfo(b.dtype).eps
        if rel > limit:
            raise FoldError(f"output {i}: the folded model differs from the original by {rel:.3g} of the output "
                            f"scale (limit {limit:.3g}); not returned")
    return worst


def _declared_pairs(model: nn.Module, adjacency: Sequence[tuple[str, str, str]]) -> list[_Pair]:
    out = []
    modules = dict(model.named_modules())
    for entry in adjacency:
        norm, layer, side = entry
        if side not in ("output", "input"):
            raise FoldError(f"adjacency {entry}: side must be 'output' (norm after the layer) or 'input'")
        for path in (norm, layer):
            if path not in modules:
                raise FoldError(f"adjacency {entry}: the model has no submodule {path!r}")
        if not _is_norm(modules[norm]) or not isinstance(modules[layer], _LAYERS):
            raise FoldError(f"adjacency {entry}: {norm!r} must be a norm and {layer!r} an nn.Linear / nn.Conv")
        out.append(_Pair(norm, layer, side))  # type: ignore[arg-type]
    return out


def fold_with_report(model: nn.Module, example_inputs: Any = None, *, example_kwargs: dict[str, Any] | None = None,
                     strict: bool = True, rtol: float | None = None,
                     adjacency: Sequence[tuple[str, str, str]] = ()) -> tuple[nn.Module, FoldReport]:
    """`fold`, also returning what was folded where, and what was kept or refused."""
    kwargs = dict(example_kwargs or {})
    args = _as_args(example_inputs)
    norms = {path: m for path, m in model.named_modules() if _is_norm(m)}
    refusals: dict[str, str] = {}
    affines: dict[str, Affine] = {}
    for path, m in norms.items():
        try:
            affines[path] = _affine(m)
        except _Refusal as exc:
            refusals[path] = str(exc)
    report = FoldReport()
    # A norm in train mode is refused even with strict=False: the returned copy is in eval mode, where that
    # norm would silently compute something else than the model it was given.
    training = {path: why for path, why in refusals.items() if norms[path].training}
    if (refusals and strict) or training:
        shown = refusals if strict else training
        lines = "\n".join(f"  {path or '<model>'} ({type(norms[path]).__name__}): {why}"
                          for path, why in shown.items())
        hint = ("call model.eval() first" if len(training) == len(shown) else
                "fold(..., strict=False) folds the others and leaves these in place (train-mode norms excepted)")
        raise FoldError(f"cannot fold {len(shown)} norm(s) of {type(model).__name__}:\n{lines}\n({hint})")
    report.refused = list(refusals.items())

    folded = copy.deepcopy(model).eval()
    reference = copy.deepcopy(model).eval()
    declared = _declared_pairs(folded, adjacency)
    found, calls, report.untraced = _discover(folded)
    # Declared pairs first; then output side before input side: a norm between two layers goes into the one
    # that produced its input.
    pairs = declared + sorted((p for p in found if p.norm not in {d.norm for d in declared}),
                              key=lambda p: p.side != "output")
    ranks = _input_ranks(folded, list(affines), args, kwargs) if args or kwargs else {}
    done: set[str] = set()
    missed: dict[str, str] = {}
    for pair in pairs:
        if pair.norm in done or pair.norm not in affines:
            continue
        if calls.get(pair.norm, 1) > 1 or calls.get(pair.layer, 1) > 1:
            missed[pair.norm] = f"{pair.norm if calls.get(pair.norm, 1) > 1 else pair.layer} is applied more " \
                                "than once: folding would change its other uses"
            continue
        layer = folded.get_submodule(pair.layer)
        why = _fold_pair(folded.get_submodule(pair.norm), layer, pair.side, affines[pair.norm],
                         ranks.get(pair.norm))
        if why is not None:
            missed[pair.norm] = f"not folded into {pair.layer}: {why}"
            continue
        parent, _, leaf = pair.norm.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, leaf, Folded(pair.layer, pair.side))
        done.add(pair.norm)
        report.folded.append(FoldStep(pair.norm, pair.layer, pair.side))
    for path in affines:
        if path not in done:
            report.kept.append((path, missed.get(path, "no adjacent Linear / Conv that reads it or feeds it alone")))
    if args or kwargs:
        report.verified_rel_error = _verify(reference, folded, args, kwargs, rtol)
    return folded, report


def fold(model: nn.Module, example_inputs: Any = None, *, example_kwargs: dict[str, Any] | None = None,
         strict: bool = True, rtol: float | None = None, adjacency: Sequence[tuple[str, str, str]] = ()) -> nn.Module:
    """An eval-mode deep copy of `model` with every foldable norm folded into its adjacent Linear / Conv.

    example_inputs (a tensor or a tuple of positional arguments) and example_kwargs (e.g. a pad mask), when
    given, are run through both models and the outputs must agree within `rtol` of their scale (default
    1e3·eps of the output dtype); otherwise FoldError. With strict (the default) a norm that cannot be folded
    — LayerNorm, RMSNorm, GroupNorm, a norm in train mode, PowerNorm with layer scale, BatchNorm without
    running statistics — raises FoldError naming its module path and why; strict=False leaves it in place.
    adjacency declares pairs the tracer cannot see, as (norm path, layer path, "output" | "input"): the norm
    sits after ("output") or before ("input") the layer and nothing else reads the value between them.
    """
    return fold_with_report(model, example_inputs, example_kwargs=example_kwargs, strict=strict, rtol=rtol,
                            adjacency=adjacency)[0]
