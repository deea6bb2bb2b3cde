"""A plugin whose import leaves a lazy module in sys.modules, as speechbrain does for its optional integrations
(speechbrain.utils.importutils.LazyModule): any attribute lookup imports the target, and raises ImportError when
the target (here a missing optional dependency) does not import."""

from __future__ import annotations

import sys
import types

import torch

from normbench import Implementation
from plugins.import_time import _Exact

NAME = "_normbench_test_lazy.k2_fsa"


class LazyModule(types.ModuleType):
    def __init__(self, name: str, target: str) -> None:
        super().__init__(name)
        self.target = target

    def __getattr__(self, attr: str) -> object:
        raise ImportError(f"Lazy import of {self.target!r} failed: No module named 'k2'")


def install() -> types.ModuleType:
    module = sys.modules.get(NAME)
    if module is None:
        module = sys.modules[NAME] = LazyModule(NAME, "speechbrain.integrations.k2_fsa")
    return module


def leaves_lazy_module() -> Implementation:
    """A correct LayerNorm; only the lazy module it leaves behind could get in the way."""
    install()
    return Implementation(name="lazy_module.LayerNorm", family="layernorm", factory=_Exact)


class _UsesIt(_Exact):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.modules[NAME].intersect  # noqa: B018 - uses the missing library: a real error of the plugin's
        return super().forward(x)


def uses_lazy_module() -> Implementation:
    install()
    return Implementation(name="lazy_module.uses_it", family="layernorm", factory=_UsesIt)
