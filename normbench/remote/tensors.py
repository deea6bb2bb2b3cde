"""Tensors across the boundary as data: a JSON header (dtype, shape, strides) and one raw byte frame per tensor.

Nothing is pickled either way. What the trusted process receives becomes a tensor it allocated itself, filled from
a private copy of the bytes (`bytearray`), of exactly ``torch.Tensor``: no subclass, no ``__torch_function__``, no
memory the plugin's process can still write. Each frame's length must be exactly what its header
declares, and a header is checked against a whitelist of dtypes and a size cap before a byte is read.

A tensor of SPILL_BYTES or more goes through a file in a folder both sides know (on tmpfs where the scratch folder
is): a pipe moves it 64 KB at a time, each chunk waiting for the other process to be scheduled, which cost the
trusted judge 2 s of 14 on one implementation's plan on a loaded 2-core machine. The receiver reads it into its
own memory and deletes it at once; the header names the file by a random hex name only, which the receiver
resolves inside its own folder (no path from the other side is ever opened).

Tensors the trusted process sends keep their strides (a transposed x, an expanded dy: the layouts a module must
handle, BUGS.md's calling contexts), shipped as the span of storage they cover.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from normbench import wire

#: dtypes a norm's tensors may have; anything else is a protocol error
DTYPES: dict[str, torch.dtype] = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}
_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in DTYPES.values()}
#: the most tensor bytes either side accepts in one message (a kernel-threshold case is (65537, 64) float64 = 34 MB)
MAX_TENSOR_BYTES = 1 << 30
MAX_RANK = 8
#: tensors at least this large travel through a spill file instead of the pipe, and a message carries at most
#: MAX_INLINE_BYTES of tensors itself (it stays under normbench.wire's message limit)
SPILL_BYTES = 256 << 10
MAX_INLINE_BYTES = 2 << 20
_SPILL_NAME = re.compile(r"[0-9a-f]{32}")
#: the spill folder beside a judging child's output file (normbench.sandbox), the same path on both sides
SPILL_FOLDER = "tensors"


def spill_folder(output: str | Path) -> Path:
    """The spill folder of the sandbox whose child writes its output to `output`, created if missing."""
    folder = Path(output).parent / SPILL_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


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
         keep_strides: bool = False, spill: Path | None = None) -> None:
    """`message` (plain data) with its tensors, in one write: the magic, the JSON header's length, the header (each
    tensor's layout, None for a missing one) and the tensors' bytes. Large ones, and whatever would take the
    message past MAX_INLINE_BYTES, are written to a file of `spill` instead, named in their header. One write
    means one wake-up of the other process: a write per tensor cost two or three."""
    heads: list[Any] = []
    inline: list[memoryview] = []
    size = 0
    for t in tensors:
        if t is None:
            heads.append(None)
            continue
        head, data = header(t, keep_strides), payload(t, keep_strides)
        if spill is not None and (data.nbytes >= SPILL_BYTES or size + data.nbytes > MAX_INLINE_BYTES):
            name = secrets.token_hex(16)
            # readable by the other side, which may run under another user id (normbench.judge_user); the folder
            # itself is entered only by that id and the run's user
            fd = os.open(spill / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            os.fchmod(fd, 0o644)  # whatever the umask
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            head.append(name)
        else:
            if size + data.nbytes > MAX_INLINE_BYTES:
                raise ValueError(f"{size + data.nbytes} bytes of tensors and no spill folder to put them in")
            inline.append(data)
            size += data.nbytes
        heads.append(head)
    head_bytes = json.dumps({"message": message, "tensors": heads}, default=wire._plain).encode()
    conn.send_bytes(b"".join([wire.TENSOR_MAGIC, len(head_bytes).to_bytes(4, "little"), head_bytes, *inline]))


def _read_spilled(spill: Path | None, name: Any, nbytes: int, where: str) -> bytearray:
    if spill is None or not isinstance(name, str) or not _SPILL_NAME.fullmatch(name):
        raise wire.ProtocolError(f"{where}: a tensor in a spill file this side does not accept")
    path = spill / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO put there does not block
    except OSError as exc:
        raise wire.ProtocolError(f"{where}: its spill file cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != nbytes:
            raise wire.ProtocolError(f"{where}: a spill file of {info.st_size} bytes where its header declares "
                                     f"{nbytes}")
        data = bytearray(nbytes)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            if fh.readinto(data) != nbytes:
                raise wire.ProtocolError(f"{where}: a spill file shorter than its header declares")
        return data  # a private copy: the tensor made from it owns it
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _checked_header(head: Any, where: str) -> tuple[torch.dtype, tuple[int, ...], tuple[int, ...] | None, int]:
    if not (isinstance(head, list) and len(head) in (3, 4)):
        raise wire.ProtocolError(f"{where}: a malformed tensor header")
    name, shape, stride = head[:3]
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise wire.ProtocolError(f"{where}: a tensor of dtype {str(name)[:40]!r}; allowed: {sorted(DTYPES)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise wire.ProtocolError(f"{where}: a tensor shape that is not a list of at most {MAX_RANK} sizes")
    if stride is not None and not (isinstance(stride, list) and len(stride) == len(shape) and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in stride)):
        raise wire.ProtocolError(f"{where}: tensor strides that are not one non-negative integer per dimension")
    itemsize = _ITEMSIZE[dtype]
    elements = _span(shape, stride) if stride is not None else math.prod(shape)
    if elements * itemsize > MAX_TENSOR_BYTES:
        raise wire.ProtocolError(f"{where}: a tensor of {elements * itemsize} bytes (at most {MAX_TENSOR_BYTES})")
    return dtype, tuple(shape), None if stride is None else tuple(stride), elements * itemsize


def _tensor(dtype: torch.dtype, shape: tuple[int, ...], stride: tuple[int, ...] | None,
            data: bytes | bytearray) -> torch.Tensor:
    if not data:
        flat = torch.empty(0, dtype=dtype)
    else:
        # a private, writable copy (a spill file's was read into one already); the tensor keeps a reference to it
        flat = torch.frombuffer(data if isinstance(data, bytearray) else bytearray(data), dtype=torch.uint8).view(dtype)
    if stride is None:
        return flat.reshape(shape) if flat.numel() else torch.empty(shape, dtype=dtype)
    if not flat.numel():
        return torch.empty_strided(shape, stride, dtype=dtype)
    return flat.as_strided(shape, stride)


def receive(conn: Connection, where: str, spill: Path | None = None) -> tuple[Any, list[torch.Tensor | None]]:
    """The next message and its tensors, each checked and copied; ProtocolError naming what was wrong."""
    return frames(conn, wire.receive(conn), where, spill)


def is_envelope(value: Any) -> bool:
    return isinstance(value, wire.TensorMessage)


def frames(conn: Connection, envelope: Any, where: str, spill: Path | None = None
           ) -> tuple[Any, list[torch.Tensor | None]]:
    """The message and tensors of `envelope`, a received tensor message (`conn` is not read: one write holds it
    all)."""
    if not is_envelope(envelope) or len(envelope) < 8:
        raise wire.ProtocolError(f"{where}: a reply that is not a normbench tensor message")
    data = memoryview(envelope)
    length = int.from_bytes(data[4:8], "little")
    if 8 + length > len(data):
        raise wire.ProtocolError(f"{where}: a tensor message whose header runs past its end")
    try:
        head = json.loads(bytes(data[8:8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise wire.ProtocolError(f"{where}: a tensor header that is not UTF-8 JSON ({type(exc).__name__})") from exc
    if not (isinstance(head, dict) and set(head) == {"message", "tensors"} and isinstance(head["tensors"], list)
            and len(head["tensors"]) <= 4096):
        raise wire.ProtocolError(f"{where}: a reply that is not a normbench tensor message")
    offset = 8 + length
    tensors: list[torch.Tensor | None] = []
    total = 0
    for i, item in enumerate(head["tensors"]):
        if item is None:
            tensors.append(None)
            continue
        dtype, shape, stride, nbytes = _checked_header(item, f"{where}, tensor {i}")
        total += nbytes
        if total > MAX_TENSOR_BYTES:
            raise wire.ProtocolError(f"{where}: tensors of more than {MAX_TENSOR_BYTES} bytes in one message")
        if len(item) == 4:
            tensors.append(_tensor(dtype, shape, stride, _read_spilled(spill, item[3], nbytes, f"{where}, tensor {i}")))
            continue
        if offset + nbytes > len(data):
            raise wire.ProtocolError(f"{where}, tensor {i}: {len(data) - offset} bytes left where its header declares "
                                     f"{nbytes}")
        t = _tensor(dtype, shape, stride, bytearray(data[offset:offset + nbytes]))
        offset += nbytes
        if type(t) is not torch.Tensor:  # cannot happen: the tensor is ours; said so the rule is visible
            raise wire.ProtocolError(f"{where}, tensor {i}: not a torch.Tensor")
        tensors.append(t)
    if offset != len(data):
        raise wire.ProtocolError(f"{where}: {len(data) - offset} bytes after the last tensor")
    return head["message"], tensors
