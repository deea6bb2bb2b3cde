"""Triton's interpreter as an implementation's process meets it (``--triton-interpret``): the variable that turns it
on before a plugin is imported, and what a failure raised from Triton's own frames says. Apart from
normbench.triton_interpret, which probes implementations in normbench.sandbox's child processes, because the sandbox
needs these pieces in every child it starts."""

from __future__ import annotations

import importlib.util
import os
import traceback
from pathlib import Path
from types import TracebackType

#: the variable Triton reads at each @triton.jit decoration
ENV_VAR = "TRITON_INTERPRET"

def set_interpreter_environment() -> None:
    """In a child, before the plugin's source is imported: kernels decorated from now on run in the interpreter."""
    os.environ[ENV_VAR] = "1"


def triton_folder() -> Path | None:
    """Where the installed triton package lives, found without importing it (this process must not)."""
    try:
        found = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))).resolve()


def _in_triton(filename: str, folder: Path | None) -> bool:
    return folder is not None and filename.startswith(str(folder) + os.sep)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (each once)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return out


def _frames(tb: TracebackType | None) -> list[TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _kernel_name(frames: list[TracebackType], folder: Path | None) -> str | None:
    """The kernel a Triton frame was running: its launcher's ``self`` (an InterpretedFunction, an Autotuner, a
    Heuristics wrapper) leads through ``.fn`` to the decorated Python function."""
    for tb in frames:
        if not _in_triton(tb.tb_frame.f_code.co_filename, folder):
            continue
        obj = tb.tb_frame.f_locals.get("self")
        for _ in range(4):
            if obj is None or not hasattr(obj, "fn"):
                break
            obj = obj.fn
        name = getattr(obj, "__name__", None) if obj is not None and callable(obj) else None
        if isinstance(name, str):
            return name
    return None


def _where(tb: TracebackType) -> str:
    summary = traceback.extract_tb(tb, limit=1)[0]
    line = f": {summary.line.strip()}" if summary.line else ""
    return f"{Path(summary.filename).name}:{summary.lineno} in {summary.name}{line}"


def interpreter_failure(exc: BaseException, folder: Path | None = None) -> str | None:
    """What Triton's interpreter could not do, when `exc` was raised from Triton's own frames (a launch, the
    autotuner, the driver); None for an exception of the implementation's own code."""
    folder = folder if folder is not None else triton_folder()
    chain = _chain(exc)
    for raised in chain:
        frames = _frames(raised.__traceback__)
        first = next((i for i, tb in enumerate(frames) if _in_triton(tb.tb_frame.f_code.co_filename, folder)), None)
        if first is None:
            continue
        kernel = _kernel_name(frames[first:], folder)
        launch = f" (launched at {_where(frames[first - 1])})" if first else ""
        root = chain[-1]
        inside = [tb for tb in _frames(root.__traceback__) if not _in_triton(tb.tb_frame.f_code.co_filename, folder)]
        at = f" at {_where(inside[-1])}" if root is not raised and inside else ""
        name = f"kernel {kernel!r}" if kernel else "a Triton kernel"
        return f"{name}{launch} raised {type(root).__name__}: {root}{at}"
    return None


def import_failure_reason(traceback_text: str, message: str, folder: Path | None = None) -> str | None:
    """Why a plugin's source did not import under the interpreter (`message`, discovery's), when its traceback passes
    through Triton's frames (a library that refuses to import without a device); None otherwise."""
    folder = folder if folder is not None else triton_folder()
    if folder is None or f'File "{folder}{os.sep}' not in traceback_text:
        return None
    return (f"Triton's interpreter (--triton-interpret) cannot import it: {message}; its implementations are not "
            "judged here (on a CUDA machine, without --triton-interpret, they may be)")
