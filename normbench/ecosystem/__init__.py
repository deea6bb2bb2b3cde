"""The ecosystem catalogue: adapters for the norms real libraries ship, judged as they are called, in the spirit of
ann-benchmarks' algorithm wrappers.

Opt-in: nothing here is in the default `normbench.implementations` entry-point group, so `pytest suite` judges
the built-ins only. Judge the catalogue with

    pytest suite --no-entry-points --impl-path normbench.ecosystem:implementations --results-dir results/ecosystem

Each library is imported lazily, inside its own adapter module: a library that is missing or broken becomes
one catalogue entry with the import error (nothing is stubbed into sys.modules), and the others are judged.
Names are `<distribution>.<Class>` (`transformers.LlamaRMSNorm`, `x_transformers.ScaleNorm`,
`torchscale.RMSNorm`, `torchtune.RMSNorm`, `litgpt.RMSNorm`, `diffusers.RMSNorm`, `timm.LayerNorm2d`).
`catalogue()` accounts for every class, judged or not; `implementations()` is what the suite judges.
"""

from __future__ import annotations

from collections.abc import Callable

from normbench.ecosystem._catalogue import Entry
from normbench.implementation import Implementation
from normbench.registry import PluginUnavailable


def _libraries() -> dict[str, Callable[[], list[Entry]]]:
    from normbench.ecosystem import diffusers, hf, litgpt, timm, torchscale, torchtune, x_transformers

    return {"transformers": hf.entries, "x_transformers": x_transformers.entries, "torchscale": torchscale.entries,
            "torchtune": torchtune.entries, "litgpt": litgpt.entries, "diffusers": diffusers.entries,
            "timm": timm.entries}


def catalogue(libraries: tuple[str, ...] | None = None) -> list[Entry]:
    """Every catalogue entry of the named libraries (all by default), judged or with the reason it is not."""
    known = _libraries()
    unknown = sorted(set(libraries or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown ecosystem libraries {unknown}; known: {sorted(known)}")
    out: list[Entry] = []
    for name, entries in known.items():
        if libraries is None or name in libraries:
            out.extend(entries())
    return out


def _judged(libraries: tuple[str, ...] | None) -> list[Implementation | PluginUnavailable]:
    """The judged adapters, and for a library that is missing or broken one PluginUnavailable with the import
    error: the suite shows it as one skipped item."""
    entries = catalogue(libraries)
    out: list[Implementation | PluginUnavailable] = [PluginUnavailable(e.name, e.reason) for e in entries
                                                     if e.status == "unavailable"]
    return out + [e.implementation for e in entries if e.implementation is not None]


def implementations() -> list[Implementation | PluginUnavailable]:
    """Every judged adapter of every library that imports (the `--impl-path` target of the catalogue)."""
    return _judged(None)


def transformers_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("transformers",))


def x_transformers_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("x_transformers",))


def torchscale_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("torchscale",))


def torchtune_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("torchtune",))


def litgpt_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("litgpt",))


def diffusers_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("diffusers",))


def timm_implementations() -> list[Implementation | PluginUnavailable]:
    return _judged(("timm",))
