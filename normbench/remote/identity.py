"""The trusted side's record of the tensors kept over there for an item: a tensor's identity across calls.

Beside the plugin, a check that edits its input in place and calls the module again hands it the same tensor object
at the same address with a moved version counter; a module that caches its output on ``id(x)`` or ``x.data_ptr()``
then returns a stale result, and one whose output is a static buffer overwrites what it returned before. A fresh
copy per call would hide both. So each input is sent once, under a handle the trusted side chooses, and kept over
there (normbench.remote.server) while the trusted side's tensor lives; passed again, it is named by its handle, and
what the check wrote into it since is sent as a write into the kept tensor: an in-place copy where the local version
moved (so the version moves over there too), through ``.data`` where it did not (gradcheck's perturbations). Each
output is kept over there under a handle too, and after every call the plugin's side says which kept tensor changed
since (a static output overwritten, an earlier input written later): written into the trusted side's tensor, as it
would have changed beside the check.

A hostile plugin's side can only report changes to tensors it was given or returned in this item that the trusted
side still holds, with the dtype and shape they have here (anything else is a protocol error): exactly what a module
that kept references to them could write beside the check, and nothing else of the trusted process. What it reports
is data written into tensors the trusted process owns, compared by the check as before.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import torch

from normbench.remote.server import MAX_OUTPUTS, _same, _snapshot


class ProtocolViolation(Exception):  # noqa: N818 - raised as the proxy's ChildLost("protocol", ...)
    """What the plugin's side said about kept tensors that it cannot have meant."""


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return -1


def _layout(t: torch.Tensor) -> tuple[Any, ...]:
    return t.dtype, tuple(t.shape), tuple(t.stride()), t.device


@dataclasses.dataclass
class _Entry:
    ref: weakref.ref[torch.Tensor]
    layout: tuple[Any, ...]
    #: for an input: what the plugin's side holds of it (identity and bits) and the local version then
    held: tuple[int, torch.Tensor] | None = None
    version: int = 0


class KeptTensors:
    """Handles of the tensors kept over there, for one session."""

    def __init__(self) -> None:
        self.next_handle = 0
        self.inputs: dict[int, int] = {}  # id(local input) -> handle
        self.entries: dict[int, _Entry] = {}
        #: handles whose local tensor died: the plugin's side may drop them (said with the next request; a finalizer
        #: may run in the middle of another request, so it never writes to the pipe itself)
        self.forgotten: list[int] = []

    def _forget(self, handle: int, ident: int | None) -> None:
        self.entries.pop(handle, None)
        if ident is not None and self.inputs.get(ident) == handle:
            del self.inputs[ident]
        self.forgotten.append(handle)

    def input(self, t: torch.Tensor) -> tuple[dict[str, Any], bool]:
        """How input `t` goes over (its handle; new, written since and how, or as it is there) and whether its bytes
        go with it."""
        if t.is_inference():  # written in place only inside inference mode: sent fresh each call, never kept
            return {"h": None}, True
        handle = self.inputs.get(id(t))
        entry = self.entries.get(handle) if handle is not None else None
        if entry is not None and entry.ref() is t and entry.layout == _layout(t) and entry.held is not None:
            write = self.written_since(t)
            return ({"h": handle}, False) if write is None else (write, True)
        handle = self.next_handle
        self.next_handle += 1
        self.inputs[id(t)] = handle
        self.entries[handle] = _Entry(weakref.ref(t), _layout(t))
        weakref.finalize(t, self._forget, handle, id(t))
        return {"h": handle, "new": True}, True

    def written_since(self, t: torch.Tensor) -> dict[str, Any] | None:
        """For a kept input: how it was written here since the plugin's side last had it, or None (unchanged, or not
        kept). Never registers a tensor."""
        handle = self.inputs.get(id(t))
        entry = self.entries.get(handle) if handle is not None else None
        if entry is None or entry.ref() is not t or entry.layout != _layout(t) or entry.held is None:
            return None
        version = _version(t)
        if version == entry.version and _same(t, entry.held):
            return None
        return {"h": handle, "write": "bump" if version != entry.version else "data"}

    def settle(self, inputs: list[torch.Tensor]) -> None:
        """After a call (and what it wrote into its inputs was written here): what the plugin's side now holds."""
        for t in inputs:
            self.resnap(t)

    def resnap(self, t: torch.Tensor) -> None:
        handle = self.inputs.get(id(t))
        entry = self.entries.get(handle) if handle is not None else None
        if entry is not None and entry.ref() is t:
            entry.held, entry.version = _snapshot(t), _version(t)

    def reserve_outputs(self) -> int:
        """The first of MAX_OUTPUTS handles for the outputs of the next call."""
        base = self.next_handle
        self.next_handle += MAX_OUTPUTS
        return base

    def adopt_outputs(self, base: int, outputs: list[torch.Tensor]) -> None:
        for j, o in enumerate(outputs):
            self.entries[base + j] = _Entry(weakref.ref(o), _layout(o))
            weakref.finalize(o, self._forget, base + j, None)

    def take_changes(self, handles: Any, values: list[torch.Tensor | None]) -> None:
        """Kept tensors the plugin's side says changed since it last said: written into the trusted side's."""
        if not (isinstance(handles, list) and len(handles) == len(values)
                and all(isinstance(h, int) and not isinstance(h, bool) for h in handles)):
            raise ProtocolViolation("a reply whose changed kept tensors do not match its tensors")
        with torch.no_grad():
            for handle, value in zip(handles, values, strict=True):
                if not 0 <= handle < self.next_handle:
                    raise ProtocolViolation(f"a reply that changes a kept tensor {handle} it was never given")
                entry = self.entries.get(handle)
                target = entry.ref() if entry is not None else None
                if target is None:
                    continue  # gone here since: nobody can see it change
                if value is None or value.dtype != target.dtype or value.shape != target.shape:
                    raise ProtocolViolation(f"a reply that changes kept tensor {handle} ({target.dtype}, "
                                            f"{list(target.shape)}) into "
                                            f"{'nothing' if value is None else f'{value.dtype}, {list(value.shape)}'}")
                target.copy_(value)
                self.resnap(target)

    def take_forgotten(self) -> list[int]:
        out, self.forgotten = self.forgotten, []
        return out
