"""What an implementation's process's outcome says about that process: the torch state its import changed, and how
it died. Apart from normbench.sandbox, which starts those processes, because the trusted judge
(normbench.remote.judge), which the sandbox runs, reports them in the same words."""

from __future__ import annotations

import multiprocessing.process
import signal
from typing import Any

from normbench.outcome import Outcome

#: the outcome metric that lists what the implementation's import changed (normbench.judge_guard.import_changes)
IMPORT_CHANGES = "import_time_changes"


def with_findings(outcome: Outcome, findings: list[str]) -> Outcome:
    """Every outcome of an implementation whose import changed torch carries the list (a copy: the child's own is
    not the plugin's to edit)."""
    if findings:
        outcome.metrics = metrics_with_findings(outcome.metrics, findings)
    return outcome


def metrics_with_findings(metrics: dict[str, Any] | None, findings: list[str]) -> dict[str, Any]:
    """`metrics` with the list of what the import changed, where it changed anything."""
    return {**(metrics or {}), IMPORT_CHANGES: list(findings)} if findings else dict(metrics or {})


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
