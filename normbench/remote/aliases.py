"""Which tensors an output shares storage with, as a fact the plugin's process reports, decided on here.

A tensor the trusted process received is a copy it allocated itself, so no comparison of pointers here can show that
the module's output was its input (an in-place normalization) or one of its parameters. The plugin's side
(normbench.remote.server) therefore compares, over there, each output's storage with the storages of the call's
inputs and of the module's parameters and buffers (`storage_overlaps`, the same test the check makes beside the
plugin), and says which of them it overlaps; the proxy (normbench.remote.proxy) checks that the reply names only
tensors of that call and records them on the output it returns (`record`), and `shared_over_there` is what the check
asks.

What a hostile plugin can do with this report: claim "shares nothing" while its module aliases. The report is made
from the very tensors whose bytes go back, so to make that claim and keep its verdict the plugin must also send an
output that is a distinct value and an input left as it was received (a write into the input is reported and
written into the caller's tensor independently of this report: `inputs_written`), i.e. behave, in everything the
trusted process observes, exactly as a module that does not alias. It cannot turn a real, observable alias into a
pass: only a module that changes what it does when the protocol's server calls it can, which is the harness-detecting
plugin every trusted check already names as out of reach (docs/isolation.md). Claiming an alias that is not there
only fails the plugin itself; a report that names a tensor the call did not have is a protocol error.
"""

from __future__ import annotations

import weakref

import torch

#: the attribute of a received output that holds weak references to the local tensors it shared storage with
_SHARES_WITH = "_normbench_shares_with"


def storage_overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the storages of a and b overlap (a view, or the same buffer under another name)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    sa, sb = a.untyped_storage(), b.untyped_storage()
    a0, b0 = sa.data_ptr(), sb.data_ptr()
    return a0 < b0 + sb.nbytes() and b0 < a0 + sa.nbytes()


def record(output: torch.Tensor, shared: list[torch.Tensor]) -> None:
    """Note on a received `output` the local tensors whose counterparts its counterpart shared storage with. Weak
    references: the note must not keep a caller's input alive (a cache keyed on a freed pointer would then never hit
    where beside the plugin it would)."""
    setattr(output, _SHARES_WITH, tuple(weakref.ref(t) for t in shared))


def shared_over_there(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the plugin's process reported that `a` (an output it returned) shared storage with `b` there."""
    return any(ref() is b for ref in getattr(a, _SHARES_WITH, ()))
