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
