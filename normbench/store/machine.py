"""The machine a record was measured on: its fingerprint (what the numbers depend on), its id, normbench's commit."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def normbench_commit() -> str:
    """The commit of the clone normbench runs from; "unknown" for an installed copy (the record's version says which),
    including one in a virtualenv inside someone else's repository, whose commit is not normbench's."""
    root = Path(__file__).resolve().parents[2]  # store/ -> normbench/ -> the clone
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        toplevel, commit = out.stdout.split()
        if Path(toplevel).resolve() != root:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"


def machine_fingerprint() -> dict[str, Any]:
    """What the numbers depend on: CPU / GPU, core count, torch and CUDA versions."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_id(fingerprint: dict[str, Any] | None = None) -> str:
    """A readable, stable folder name for a machine: device name slug plus a short hash."""
    fp = fingerprint or machine_fingerprint()
    device = fp.get("gpu") or fp.get("cpu") or "unknown"
    slug = re.sub(r"[^a-z0-9]+", "-", str(device).lower()).strip("-")[:40]
    key = json.dumps({k: fp.get(k) for k in ("cpu", "cores", "gpu", "machine")}, sort_keys=True)
    return f"{slug}-{fp.get('cores')}c-{hashlib.sha1(key.encode()).hexdigest()[:8]}"

