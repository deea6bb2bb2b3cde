"""What normbench reads, hashed before any plugin runs and again before a run's records are written, so that a run whose
judged files change under it writes no record.

A judging process runs plugin code under the same user as the run, so it could edit the files a verdict depends
on: the float64 references, the specs, the known-failure files (a plugin that edited the installed
``reference/layernorm.py`` made the control fail 8 items in that run and the next; one that wrote into the
known-failures folder turned 22 failures into expected ones). Where the OS gives no read-only view, the parent
hashes those files when the run starts and again at its end; if any changed, the run's records are refused, naming
the files, and the run fails. The parent's own check, so a plugin's process cannot answer for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

#: the kinds of file a verdict is computed from
SUFFIXES = (".py", ".yaml", ".yml", ".json", ".j2")


def judged_paths(extra: Iterable[str | Path] = ()) -> list[Path]:
    """normbench's installed package (its references, specs and known failures included), its two top-level
    modules (the pytest entry point and the forkserver's preload) and the spec and known-failure paths the run was
    given."""
    import importlib.util

    import normbench
    import normbench.reference
    import normbench.specs
    import normbench_forkserver

    roots = {Path(normbench.__file__).parent, Path(normbench.reference.__file__).parent,
             Path(normbench.specs.__file__).parent, Path(normbench_forkserver.__file__)}
    entry = importlib.util.find_spec("normbench_entry")  # found, not imported: importing it is pytest's to do
    if entry is not None and entry.origin:
        roots.add(Path(entry.origin))
    roots.update(Path(p) for p in extra)
    return sorted(roots)


def digest(roots: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file of the kinds in SUFFIXES under `roots` (a root may be a file)."""
    out: dict[str, str] = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES
                                                     and p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            try:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                out[str(path)] = f"unreadable: {exc.strerror}"
    return out


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The files that were changed, removed or added between two digests."""
    out = [f"{path} was changed" for path, value in before.items() if path in after and after[path] != value]
    out += [f"{path} was removed" for path in before if path not in after]
    out += [f"{path} was added" for path in after if path not in before]
    return out
