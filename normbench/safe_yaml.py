"""Reading the project's YAML data files (family specs, known-failures files) so that no file can hang or crash a run.

Every file is checked before it is parsed, and every problem is a `YamlFileError` the caller turns into its own
error naming the file (a `SpecError`, a `KnownFailuresError`); the other files are still read:

- **regular files only**: a FIFO named ``x.yaml`` would block ``open()`` forever, a symlink to ``/dev/zero`` would
  read forever. The path is ``stat``-ed before it is opened, then opened with ``O_NONBLOCK`` and ``fstat``-ed again
  (it may have been swapped between the two);
- **at most `MAX_BYTES`** (1 MiB; the largest shipped spec is about 10 KB), read with a bound, so a file that grows
  while it is read is refused too;
- **UTF-8**, decoded strictly, the offending byte and offset named;
- **at most `MAX_DEPTH` levels of nesting** (32; the shipped specs nest 6 deep): the composer, the non-finite scan and
  JSON Schema validation all recurse, and 50 000 nested ``[`` was a RecursionError that named no file;
- **an alias may name a scalar only**: a 700-byte "billion laughs" file of aliases to lists of aliases expands to
  10^9 nodes in every walk of the data (the non-finite scan spun for about 390 s). An alias of a collection (or
  of a collection from inside itself) is refused while the file is composed, before anything is expanded; an alias
  of a scalar adds one node per use, so the data stays linear in the file's size (the shipped known-failures files
  share one long reason that way: ``reason: &dropped_eps ...`` then ``reason: *dropped_eps``).

YAML is loaded with (a subclass of) `yaml.SafeLoader` only: tags such as ``!!python/object`` are refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 32


class YamlFileError(ValueError):
    """A YAML data file that cannot be used: `where` is "line L, column C" where the parser knows it, else ""."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class _Refused(yaml.MarkedYAMLError):
    """A structure the bounded loader does not compose (too deep, an alias of a collection)."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class BoundedSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses nesting deeper than `MAX_DEPTH` and aliases of collections, while composing,
    so neither is ever expanded or recursed into."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and not isinstance(target, yaml.ScalarNode):
                kind = "list" if isinstance(target, yaml.SequenceNode) else "mapping"
                raise _Refused(None, None, f"alias *{event.anchor} names a {kind}; an alias may name a scalar only "
                               "(aliases of lists and mappings can expand exponentially: a YAML alias bomb)",
                               event.start_mark)
            return super().compose_node(parent, index)
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1  # lists and mappings inside one another
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_text(path: Path) -> str:
    """The UTF-8 text of the regular file `path`, at most MAX_BYTES; raises YamlFileError saying why not."""
    try:
        before = os.stat(path)
    except OSError as exc:
        raise YamlFileError("", f"cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(before.st_mode):
        raise YamlFileError("", f"not a regular file ({_kind(before.st_mode)}); only regular files are read")
    if before.st_size > MAX_BYTES:
        raise YamlFileError("", f"{before.st_size} bytes, more than the {MAX_BYTES} bytes (1 MiB) a data file may have")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise YamlFileError("", f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            raise YamlFileError("", f"not a regular file ({_kind(mode)}); only regular files are read")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise YamlFileError("", f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        raise YamlFileError("", f"more than the {MAX_BYTES} bytes (1 MiB) a data file may have")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise YamlFileError(f"line {line}", f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                            f"({exc.reason}); data files are UTF-8 text") from None


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a plain file"


def parse(text: str) -> Any:
    """The data of one YAML document, loaded with `BoundedSafeLoader`; raises YamlFileError saying why not."""
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise YamlFileError(_where(exc.problem_mark), str(exc.problem)) from None
    except yaml.constructor.ConstructorError as exc:
        raise YamlFileError(_where(exc.problem_mark) or "<unknown line>",
                            f"{exc.problem} (plain data only, loaded with yaml.safe_load's rules: tags such as "
                            "!!python/object are refused)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlFileError(_where(mark) or "<unknown line>", f"malformed YAML: {problem}") from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        # e.g. an integer of more than 4300 digits (int's str-conversion limit) raises ValueError in the constructor
        raise YamlFileError("", f"cannot be loaded: {type(exc).__name__}: {exc}") from None
    finally:
        loader.dispose()


def load_file(path: str | Path) -> Any:
    """`read_text` then `parse`: the data of the YAML file `path`, or YamlFileError saying why not."""
    return parse(read_text(Path(path)))
