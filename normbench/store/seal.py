"""Seals on the records a run writes: an HMAC with a secret only the run's parent process holds, so no plugin can write
or edit a record.

Plugin code runs as the same user as the run, so a judging process (or something it started that outlived it)
can write into the results folder. The parent makes a key with `secrets` when the run starts, keeps it in its
own memory only (never in the environment, a file or an argument: the forkserver and the xdist workers are
started by exec and never see it), and writes beside every record it stores a seal: the HMAC-SHA256 of the
record's name and exact bytes. Whenever the run reads a record it wrote back (to render the leaderboard), it
checks the seal against the very bytes it parses, so a record rewritten after the parent wrote it is refused with
an error naming the file. A later process holds no key: to it a seal proves nothing (see docs/isolation.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path

#: the seal of `raw/<machine>/conformance.json` is `raw/<machine>/conformance.json.seal` (no record glob matches it)
SEAL_SUFFIX = ".seal"


class SealError(ValueError):
    """A record whose seal is missing or does not match its bytes; the message names the file."""


def new_key() -> bytes:
    """A run's secret: 32 random bytes from the OS, held by the parent process only."""
    return secrets.token_bytes(32)


def seal_path(record: Path) -> Path:
    return Path(record).with_name(Path(record).name + SEAL_SUFFIX)


def _mac(key: bytes, name: str, data: bytes) -> str:
    # The file's name is sealed too: a sealed benchmark record copied over the conformance record does not verify.
    return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def seal_text(key: bytes, record: Path, text: str) -> str:
    """The seal file's content for `text` written to `record`."""
    return json.dumps({"hmac_sha256": _mac(key, Path(record).name, text.encode("utf-8"))}) + "\n"


def verify(key: bytes, record: Path, data: bytes) -> None:
    """Raise SealError unless `data` (the bytes read from `record`) is what the holder of `key` sealed."""
    path = seal_path(record)
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("hmac_sha256")
    except (OSError, ValueError, AttributeError) as exc:
        raise SealError(f"{record}: its seal {path.name} cannot be read ({exc}); this run wrote the record, so "
                        "something else removed or replaced the seal: the record is refused") from None
    if not isinstance(stored, str) or not hmac.compare_digest(stored, _mac(key, Path(record).name, data)):
        raise SealError(f"{record}: its bytes are not those this run wrote and sealed (a late or forged write, "
                        "e.g. by a process a plugin started): the record is refused")
