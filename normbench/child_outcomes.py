"""What an implementation's process's outcome says about that process: the torch state its import changed, and how
it died. Apart from normbench.sandbox, which starts those processes, because the trusted judge
(normbench.remote.judge), which the sandbox runs, reports them in the same words."""

from __future__ import annotations

import multiprocessing.process
import signal
from typing import Any

#: the outcome metric that lists what the implementation's import changed (normbench.judge_guard.import_changes)
IMPORT_CHANGES = "import_time_changes"


def with_findings(outcome: dict[str, Any], findings: list[str]) -> dict[str, Any]:
    """Every outcome of an implementation whose import changed torch carries the list (a copy: the child's own is
    not the plugin's to edit)."""
    if findings:
        outcome["metrics"] = {**(outcome.get("metrics") or {}), IMPORT_CHANGES: list(findings)}
    return outcome


def death(process: multiprocessing.process.BaseProcess) -> str:
    process.join(5)
    code = process.exitcode
    if code is None:
        return "its process stopped answering"
    if code < 0:
        try:
            return f"its process was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with code {code}"


def listing(changes: list[str], most: int = 8) -> str:
    """What changed, the first `most` of it."""
    more = f" (and {len(changes) - most} more)" if len(changes) > most else ""
    return "; ".join(changes[:most]) + more


def tampering_summary(name: str, changes: list[str]) -> str:
    return (f"implementation {name!r} changed the judge or torch's global state, so no verdict of this process can "
            f"be trusted: {listing(changes)}")
