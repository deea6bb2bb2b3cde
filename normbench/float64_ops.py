"""torch ops computed in float64: what decides whether a failing item's deviation is a torch op's, inherited rather than
the module's own.

A class that calls ``F.layer_norm`` fails where torch's LayerNorm fails (its CPU half-precision dγ): that finding is
torch's, declared once in torch's known-failures file, and the class only inherits it. Matching by name alone would
also excuse a class that calls the op *and* adds a bug of its own (a wrong eps, an output cast) on the same item. So
the failing item is judged again with the op replaced by a float64 computation rounded once to the dtypes the op
returns: when the item then passes, the op's own precision was the whole deviation; when it still fails, the
deviation is the class's. The substitute runs only where the class really dispatches the op, and says which ops it
replaced, so a class that does not call the op is never excused.

The substitutes are a TorchDispatchMode: they see what ``F.layer_norm``, ``nn.LayerNorm``, ``torch.layer_norm``
and ``F.batch_norm`` decompose to (``aten.native_layer_norm``, ``aten.native_batch_norm``) and their backward ops,
however the class reaches them. A float64 call is left alone (it is already the truth's precision).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from normbench.verdicts import Verdict

aten = torch.ops.aten


def _cast_like(value: torch.Tensor, like: Any) -> Any:
    return value.to(like.dtype) if isinstance(like, torch.Tensor) else like


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float64)


class Float64Ops(TorchDispatchMode):
    """Replace the named op packets (``"aten.native_layer_norm"``, ...) by float64 computations; `replaced` says
    which of them the code under the mode dispatched."""

    def __init__(self, ops: Iterable[str]) -> None:
        super().__init__()
        unknown = sorted(set(ops) - set(SUBSTITUTES))
        if unknown:
            raise ValueError(f"no float64 substitute for {unknown}; known: {sorted(SUBSTITUTES)}")
        self.ops = frozenset(ops)
        self.replaced: set[str] = set()
        #: float64 statistics of each forward, by the saved tensor torch's backward receives (kept alive here so that
        #: a storage address is never reused while the mode is on)
        self._saved: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        packet = _FAMILY_OF.get(name)
        first = args[0] if args else None
        if packet is None or packet not in self.ops or not isinstance(first, torch.Tensor) \
                or first.dtype == torch.float64 or kwargs:
            return func(*args, **kwargs)
        self.replaced.add(packet)
        return SUBSTITUTES_BY_OP[name](self, func, *args)

    def stash(self, saved: torch.Tensor, value: torch.Tensor) -> None:
        self._saved[(saved.data_ptr(), tuple(saved.shape))] = (saved, value)

    def stashed(self, saved: torch.Tensor) -> torch.Tensor | None:
        hit = self._saved.get((saved.data_ptr(), tuple(saved.shape)))
        return None if hit is None else hit[1]


def _layer_norm(mode: Float64Ops, func: Any, x: torch.Tensor, shape: Sequence[int], weight: torch.Tensor | None,
                bias: torch.Tensor | None, eps: float) -> tuple[Any, ...]:
    ref = func(x, shape, weight, bias, eps)  # the dtypes and shapes torch returns, and nothing else of it
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    x64 = _f64(x)
    mean = x64.mean(dims, keepdim=True)
    rstd = ((x64 - mean).square().mean(dims, keepdim=True) + eps).rsqrt()
    y = (x64 - mean) * rstd
    if weight is not None:
        y = y * _f64(weight)
    if bias is not None:
        y = y + _f64(bias)
    out = (y.to(x.dtype), mean.reshape(ref[1].shape).to(ref[1].dtype), rstd.reshape(ref[2].shape).to(ref[2].dtype))
    mode.stash(out[1], mean)
    mode.stash(out[2], rstd)
    return out


def _layer_norm_backward(mode: Float64Ops, func: Any, dy: torch.Tensor, x: torch.Tensor, shape: Sequence[int],
                         mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor | None,
                         bias: torch.Tensor | None, mask: Sequence[bool]) -> tuple[Any, ...]:
    dims = tuple(range(x.dim() - len(shape), x.dim()))
    batch = tuple(range(x.dim() - len(shape)))
    x64, dy64 = _f64(x), _f64(dy)
    mean64 = mode.stashed(mean)
    rstd64 = mode.stashed(rstd)
    keep = [*x.shape[: x.dim() - len(shape)], *([1] * len(shape))]
    mean64 = (_f64(mean) if mean64 is None else mean64).reshape(keep)
    rstd64 = (_f64(rstd) if rstd64 is None else rstd64).reshape(keep)
    xhat = (x64 - mean64) * rstd64
    g = dy64 * _f64(weight) if weight is not None else dy64
    dx = rstd64 * (g - g.mean(dims, keepdim=True) - xhat * (g * xhat).mean(dims, keepdim=True))
    dw = (dy64 * xhat).sum(batch) if mask[1] and weight is not None else None
    db = dy64.sum(batch) if mask[2] and bias is not None else None
    return (dx.to(x.dtype) if mask[0] else None, None if dw is None else dw.to(weight.dtype),  # type: ignore[union-attr]
            None if db is None else db.to(bias.dtype))  # type: ignore[union-attr]


def _channel_view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape([1, -1, *([1] * (x.dim() - 2))])


def _batch_norm(mode: Float64Ops, func: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool, momentum: float,
                eps: float) -> tuple[Any, ...]:
    before = [None if r is None else r.detach().clone() for r in (running_mean, running_var)]
    ref = func(x, weight, bias, running_mean, running_var, training, momentum, eps)
    dims = tuple(d for d in range(x.dim()) if d != 1)
    x64 = _f64(x)
    if training:
        mean = x64.mean(dims)
        var = (x64 - _channel_view(mean, x)).square().mean(dims)
        n = x.numel() // max(1, x.shape[1])
        for buf, old, new in ((running_mean, before[0], mean), (running_var, before[1], var * n / max(1, n - 1))):
            if buf is not None and old is not None:
                # torch updated the buffer in its precision; the float64 update is rounded once instead
                buf.copy_((1 - momentum) * _f64(old) + momentum * new)
    else:
        mean, var = _f64(before[0]), _f64(before[1])
    invstd = (var + eps).rsqrt()
    y = (x64 - _channel_view(mean, x)) * _channel_view(invstd, x)
    if weight is not None:
        y = y * _channel_view(_f64(weight), x)
    if bias is not None:
        y = y + _channel_view(_f64(bias), x)
    saved = [_cast_like(s.reshape(r.shape) if s.numel() == r.numel() else r, r) for s, r in
             ((mean, ref[1]), (invstd, ref[2]))]
    return (y.to(x.dtype), *saved)


def _batch_norm_backward(mode: Float64Ops, func: Any, dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None,
                         running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                         save_mean: torch.Tensor | None, save_invstd: torch.Tensor | None, train: bool, eps: float,
                         mask: Sequence[bool]) -> tuple[Any, ...]:
    dims = tuple(d for d in range(x.dim()) if d != 1)
    x64, dy64 = _f64(x), _f64(dy)
    if train:
        # recomputed from the input (eps is an argument here): the saved float16 invstd may already be inf
        mean = x64.mean(dims)
        invstd = ((x64 - _channel_view(mean, x)).square().mean(dims) + eps).rsqrt()
    else:
        mean, invstd = _f64(running_mean), (_f64(running_var) + eps).rsqrt()  # type: ignore[operator]
    xhat = (x64 - _channel_view(mean, x)) * _channel_view(invstd, x)
    w64 = _channel_view(_f64(weight), x) if weight is not None else 1.0
    g = dy64 * w64
    if train:
        dx = _channel_view(invstd, x) * (g - g.mean(dims, keepdim=True) - xhat * (g * xhat).mean(dims, keepdim=True))
    else:
        dx = g * _channel_view(invstd, x)
    param_dtype = x.dtype if weight is None else weight.dtype
    dw = (dy64 * xhat).sum(dims).to(param_dtype) if mask[1] else None
    db = dy64.sum(dims).to(param_dtype) if mask[2] else None
    return (dx.to(x.dtype) if mask[0] else None, dw, db)


Substitute = Callable[..., tuple[Any, ...]]
#: each substitutable op (as a known-failures entry names it in `aten_ops`) and the packets it covers: its forward
#: and the backward its autograd formula dispatches
SUBSTITUTES: dict[str, dict[str, Substitute]] = {
    "aten.native_layer_norm": {"aten.native_layer_norm": _layer_norm,
                               "aten.native_layer_norm_backward": _layer_norm_backward},
    "aten.native_batch_norm": {"aten.native_batch_norm": _batch_norm,
                               "aten.native_batch_norm_backward": _batch_norm_backward},
}
SUBSTITUTES_BY_OP: dict[str, Substitute] = {p: fn for table in SUBSTITUTES.values() for p, fn in table.items()}
_FAMILY_OF: dict[str, str] = {p: op for op, table in SUBSTITUTES.items() for p in table}


#: the metrics a judging process adds to a failing item it judged again with ops in float64 (read by the parent)
DISPATCHED = "inherited.ops_dispatched"
REJUDGED = "inherited.float64_ops_verdict"
REJUDGED_SUMMARY = "inherited.float64_ops_summary"


def judge_with_float64_ops(item: Any, ops: Iterable[str], profile: str) -> dict[str, Any]:
    """Judge `item` (a normbench.runner.PlanItem) again with `ops` computed in float64: the metrics that say which
    of them its implementation dispatched and what the item's verdict then was. Only ever called on a failing item
    whose property, mode and dtype match a torch op's known failure (the check is deterministic: derandomized
    hypothesis, seeded cases), so its cost is one more run of the items that may be inherited."""
    from normbench.runner import judge

    mode = Float64Ops(ops)
    try:
        with mode:
            again = judge(item, profile)
        verdict, summary = again.verdict, again.summary
    except Exception as exc:  # the implementation or a substitute raised: nothing is shown to be the op's
        verdict, summary = Verdict.ERROR, f"{type(exc).__name__}: {exc}"
    return {DISPATCHED: sorted(mode.replaced), REJUDGED: verdict, REJUDGED_SUMMARY: summary[:500]}
