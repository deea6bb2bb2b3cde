"""Tensors across the boundary as data: a JSON header (dtype, shape, strides) and one raw byte frame per tensor.

Nothing is pickled either way. What the trusted process receives becomes a tensor it allocated itself, filled from
a private copy of the bytes (`bytearray`), of exactly ``torch.Tensor``: no subclass, no ``__torch_function__``, no
memory the plugin's process can still write (issue 19, item 1). Each frame's length must be exactly what its header
declares, and a header is checked against a whitelist of dtypes and a size cap before a byte is read.

Tensors the trusted process sends keep their strides (a transposed x, an expanded dy: the layouts a module must
handle, BUGS.md's calling contexts), shipped as the span of storage they cover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch

from normbench import wire

#: dtypes a norm's tensors may have; anything else is a protocol error
DTYPES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}
#: the most tensor bytes either side accepts in one message (a kernel-threshold case is (65537, 64) float64 = 34 MB)
MAX_TENSOR_BYTES = 1 << 30
MAX_RANK = 8


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _span(shape: Sequence[int], stride: Sequence[int]) -> int:
    """Elements of storage a strided view covers, from its first element."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True))


def header(t: torch.Tensor, keep_strides: bool = False) -> list[Any]:
    if keep_strides and not t.is_contiguous():
        return [dtype_name(t.dtype), list(t.shape), list(t.stride())]
    return [dtype_name(t.dtype), list(t.shape), None]


def payload(t: torch.Tensor, keep_strides: bool = False) -> memoryview:
    """The bytes to send for `t` (on the CPU), laid out as `header` says."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if keep_strides and not t.is_contiguous():
        flat = t.as_strided((_span(t.shape, t.stride()),), (1,))
        t = flat.contiguous()
    else:
        t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def send(conn: Connection, message: Any, tensors: Sequence[torch.Tensor | None] = (),
         keep_strides: bool = False) -> None:
    """`message` (plain data) with its tensors: the header lists each tensor's layout (None for a missing one)."""
    heads = [None if t is None else header(t, keep_strides) for t in tensors]
    wire.send(conn, {"message": message, "tensors": heads})
    for t in tensors:
        if t is not None:
            conn.send_bytes(payload(t, keep_strides))


def _checked_header(head: Any, where: str) -> tuple[torch.dtype, tuple[int, ...], tuple[int, ...] | None, int]:
    if not (isinstance(head, list) and len(head) == 3):
        raise wire.ProtocolError(f"{where}: a malformed tensor header")
    name, shape, stride = head
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise wire.ProtocolError(f"{where}: a tensor of dtype {str(name)[:40]!r}; allowed: {sorted(DTYPES)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise wire.ProtocolError(f"{where}: a tensor shape that is not a list of at most {MAX_RANK} sizes")
    if stride is not None and not (isinstance(stride, list) and len(stride) == len(shape) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in stride)):
        raise wire.ProtocolError(f"{where}: tensor strides that are not one non-negative integer per dimension")
    itemsize = torch.empty((), dtype=dtype).element_size()
    elements = _span(shape, stride) if stride is not None else math.prod(shape)
    if elements * itemsize > MAX_TENSOR_BYTES:
        raise wire.ProtocolError(f"{where}: a tensor of {elements * itemsize} bytes (at most {MAX_TENSOR_BYTES})")
    return dtype, tuple(shape), None if stride is None else tuple(stride), elements * itemsize


def _tensor(dtype: torch.dtype, shape: tuple[int, ...], stride: tuple[int, ...] | None, data: bytes) -> torch.Tensor:
    if not data:
        flat = torch.empty(0, dtype=dtype)
    else:
        # bytearray: a private, writable copy; the tensor owns it (torch.frombuffer keeps a reference)
        flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype)
    if stride is None:
        return flat.reshape(shape) if flat.numel() else torch.empty(shape, dtype=dtype)
    if not flat.numel():
        return torch.empty_strided(shape, stride, dtype=dtype)
    return flat.as_strided(shape, stride)


def receive(conn: Connection, where: str) -> tuple[Any, list[torch.Tensor | None]]:
    """The next message and its tensors, each checked and copied; ProtocolError naming what was wrong."""
    return frames(conn, wire.receive(conn), where)


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"message", "tensors"}


def frames(conn: Connection, envelope: Any, where: str) -> tuple[Any, list[torch.Tensor | None]]:
    """The tensors that follow `envelope` (an already received header message) on `conn`."""
    if not (is_envelope(envelope) and isinstance(envelope["tensors"], list) and len(envelope["tensors"]) <= 4096):
        raise wire.ProtocolError(f"{where}: a reply that is not a normbench tensor message")
    tensors: list[torch.Tensor | None] = []
    total = 0
    for i, head in enumerate(envelope["tensors"]):
        if head is None:
            tensors.append(None)
            continue
        dtype, shape, stride, nbytes = _checked_header(head, f"{where}, tensor {i}")
        total += nbytes
        if total > MAX_TENSOR_BYTES:
            raise wire.ProtocolError(f"{where}: tensors of more than {MAX_TENSOR_BYTES} bytes in one message")
        try:
            data = conn.recv_bytes(max(nbytes, 1) + 1)
        except OSError as exc:
            raise wire.ProtocolError(f"{where}, tensor {i}: more bytes than its header declares") from exc
        if len(data) != nbytes:
            raise wire.ProtocolError(f"{where}, tensor {i}: {len(data)} bytes where its header declares {nbytes}")
        t = _tensor(dtype, shape, stride, data)
        if type(t) is not torch.Tensor:  # cannot happen: the tensor is ours; said so the rule is visible
            raise wire.ProtocolError(f"{where}, tensor {i}: not a torch.Tensor")
        tensors.append(t)
    return envelope["message"], tensors
