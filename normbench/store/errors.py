"""The store's refusals: a record or results folder normbench will not read or write, named with its fix."""

from __future__ import annotations

from pathlib import Path


class ResultsError(ValueError):
    """A record or results folder normbench refuses; `problems` lists each one (the message joins them)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


class ForgedRecord(ResultsError):
    """A record this run wrote and sealed whose bytes no longer match the seal (normbench.store.seal)."""


def move_away(path: Path) -> str:
    # a name that no record glob matches: the folder is usable again, and the file is kept for a look
    return f"move it away (e.g. `mv {path} {path}.bad`) or replace it with a good copy (`normbench merge`), then re-run"

