"""The data-only boundary between the trusted process and a plugin's: unpickling a plugin's bytes would run its code in
normbench's process.

Everything a plugin's process sends back (discovery metadata, outcomes) crosses as UTF-8 JSON, never as a pickle:
``Connection.recv()`` unpickles, and unpickling runs whatever ``__reduce__`` the sender chose, so a plugin whose
``description`` was a ``str`` subclass with a ``__reduce__`` ran its code in pytest's process and flipped
verdicts. JSON decodes to dicts, lists, strings, numbers, booleans and None only. Each message is capped in size
(a 300 MB description tripled pytest's memory) and then checked field by field against what the receiver expects;
whatever breaks the protocol is a `ProtocolError` whose message says what was wrong.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from normbench.verdicts import Verdict

#: the largest message a plugin's process may send (an outcome with its metrics and output excerpt is ~10 KB)
MAX_MESSAGE_BYTES = 4 << 20
#: the longest string accepted in an outcome's summary / a description; longer ones are cut, saying so
MAX_TEXT = 20_000
#: metric and counterexample entries kept per outcome
MAX_ENTRIES = 512


class ProtocolError(ValueError):
    """A message from a plugin's process that is not what the protocol allows; the text says what was wrong."""


def _plain(value: Any) -> Any:
    """json.dumps' fallback in the sending process: tuples are lists already; anything else becomes its str."""
    if isinstance(value, set | frozenset):
        return sorted(map(str, value))
    return str(value)


def send(conn: Connection, message: Any) -> None:
    conn.send_bytes(json.dumps(message, default=_plain, allow_nan=True).encode())


#: the first bytes of a message of normbench.remote.tensors (a JSON header and the tensors' bytes after it)
TENSOR_MAGIC = b"NBT1"


class TensorMessage(bytes):
    """A tensor message, undecoded: normbench.remote.tensors parses and checks it."""


def receive(conn: Connection, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """The next message as plain data (or a `TensorMessage`); ProtocolError when it is too large or not JSON."""
    try:
        data = conn.recv_bytes(limit)
    except OSError as exc:
        if "too long" in str(exc) or "bad message length" in str(exc):
            raise ProtocolError(f"a message over the {limit >> 20} MiB limit") from exc
        raise
    if data[:4] == TENSOR_MAGIC:
        return TensorMessage(data)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"a message that is not UTF-8 JSON ({type(exc).__name__})") from exc


def text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} is a {type(value).__name__}, not a string")
    return value if len(value) <= limit else value[:limit] + f" [... {len(value) - limit} characters cut]"


def plain_mapping(value: Any, what: str) -> dict[str, Any]:
    """A dict of string keys to JSON values, at most MAX_ENTRIES of them, strings capped."""
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what} is a {type(value).__name__}, not a mapping")
    if len(value) > MAX_ENTRIES:
        raise ProtocolError(f"{what} has {len(value)} entries (at most {MAX_ENTRIES})")
    out: dict[str, Any] = {}
    for key, item in value.items():
        out[text(key, f"a key of {what}", 200)] = text(item, f"{what}[{key!r}]") if isinstance(item, str) else item
    return out


#: what an outcome from a judging process may hold, and the verdicts it may carry; identity fields (test id,
#: implementation, family, ...) come from the plan in the parent, never from the child
OUTCOME_VERDICTS = (Verdict.PASS, Verdict.FAIL, Verdict.ERROR, Verdict.SKIP, Verdict.REPORT)
OUTCOME_OBSERVED = ("holds", "violated", None)


def outcome(message: Any) -> tuple[dict[str, Any], bool]:
    """An ("outcome", fields, tainted) message, checked: the fields the parent takes, and the taint flag."""
    if not (isinstance(message, list) and len(message) == 3 and message[0] == "outcome"):
        raise ProtocolError("a reply that is not an outcome message")
    _, fields, tainted = message
    fields = plain_mapping(fields, "the outcome")
    if not isinstance(tainted, bool):
        raise ProtocolError("the outcome's taint flag is not a boolean")
    verdict = fields.get("verdict")
    if verdict not in OUTCOME_VERDICTS:
        allowed = [str(v) for v in OUTCOME_VERDICTS]
        raise ProtocolError(f"an outcome with verdict {str(verdict)[:40]!r}; allowed: {allowed}")
    checked: dict[str, Any] = {"verdict": verdict, "summary": text(fields.get("summary", ""), "the summary")}
    observed = fields.get("observed")
    if observed not in OUTCOME_OBSERVED:
        raise ProtocolError(f"an outcome with observed {str(observed)[:40]!r}")
    checked["observed"] = observed
    checked["metrics"] = plain_mapping(fields.get("metrics") or {}, "the metrics")
    example = fields.get("counterexample")
    checked["counterexample"] = None if example is None else plain_mapping(example, "the counterexample")
    duration = fields.get("duration_s", 0.0)
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        raise ProtocolError("the outcome's duration is not a number")
    checked["duration_s"] = float(duration)
    return checked, tainted


def implementation_fields(value: Any, known: tuple[dataclasses.Field[Any], ...]) -> dict[str, Any]:
    """The fields of one discovered Implementation (all but its factory), each of the type its dataclass field
    has, strings and lists capped; Implementation(...) then validates the values themselves."""
    fields = plain_mapping(value, "an implementation's fields")
    by_name = {f.name: f for f in known if f.name != "factory"}
    unknown = sorted(set(fields) - set(by_name))
    if unknown:
        raise ProtocolError(f"an implementation with unknown fields {unknown[:5]}")
    out: dict[str, Any] = {}
    for name, item in fields.items():
        field = by_name[name]
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else "")  # type: ignore[misc]
        where = f"field {name!r}"
        if name in ("ranks", "hidden_multiple") and item is not None:  # declared shapes: integers
            values = item if name == "ranks" else [item]
            if not isinstance(values, list) or len(values) > 16 or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ProtocolError(f"{where} is not {'a list of integers' if name == 'ranks' else 'an integer'}")
            out[name] = tuple(values) if name == "ranks" else item
            continue
        if isinstance(default, bool):
            if not isinstance(item, bool):
                raise ProtocolError(f"{where} is not a boolean")
        elif isinstance(default, tuple):
            if not isinstance(item, list) or len(item) > 64:
                raise ProtocolError(f"{where} is not a list of at most 64 strings")
            item = tuple(text(v, where, 200) for v in item)
        elif isinstance(default, float):
            if not isinstance(item, int | float) or isinstance(item, bool):
                raise ProtocolError(f"{where} is not a number")
            item = float(item)
        elif isinstance(default, dict):
            item = plain_mapping(item, where)
        elif item is not None:
            item = text(item, where, 2000 if name == "description" else 500)
        out[name] = item
    return out


def discovery(message: Any) -> tuple[str, list[Any]]:
    """A discovery reply: ("ok", [fields | ["unavailable", name, reason], ...]) or ("error", message, traceback)."""
    if not (isinstance(message, list) and message and message[0] in ("ok", "error")):
        raise ProtocolError("a discovery reply that is neither ok nor error")
    if message[0] == "error":
        if len(message) != 3:
            raise ProtocolError("a malformed discovery error")
        return "error", [text(message[1], "the error"), text(message[2], "the traceback")]
    if len(message) != 2 or not isinstance(message[1], list) or len(message[1]) > 10_000:
        raise ProtocolError("a malformed discovery reply")
    entries: list[Any] = []
    for entry in message[1]:
        if isinstance(entry, list):
            if len(entry) != 3 or entry[0] != "unavailable":
                raise ProtocolError("a malformed unavailable entry")
            entries.append(("unavailable", text(entry[1], "its name", 500), text(entry[2], "its reason")))
        else:
            entries.append(entry)
    return "ok", entries
