"""The benchmarks' names for the deployments (normbench.deploy), kept for the code and tests that import them.

`build_variant` is Deployment.build: eager is the module itself; compile is ``torch.compile(module,
dynamic=False)``, compiled (twice) before anything is timed, its cost reported as `build_s`; export (called
``onnxruntime`` here before one deployment served the benchmarks and the conformance suite, which name stays an
alias) is the module exported in eval mode and run by an ONNX Runtime session on the CPU, inference passes only.
A deployment that cannot be built for a module raises DeploymentUnavailable (VariantUnavailable) with the reason,
which the benchmark turns into one skipped case.
"""

from __future__ import annotations

import torch
from torch import nn

from normbench import deploy
from normbench.deploy import BuiltDeployment, DeploymentUnavailable
from normbench.deploy.export import ORT_PASSES

__all__ = ["ORT_PASSES", "VARIANTS", "BuiltVariant", "VariantUnavailable", "build_variant", "check_variant"]

#: the canonical names (the aliases are accepted wherever a name is read)
VARIANTS: tuple[str, ...] = tuple(deploy.names())
VariantUnavailable = DeploymentUnavailable
BuiltVariant = BuiltDeployment


def check_variant(variant: str) -> str:
    """The canonical name of `variant`; UnknownDeploymentError (a ValueError) naming the accepted ones otherwise."""
    return deploy.canonical(variant)


def build_variant(variant: str, module: nn.Module, example: torch.Tensor, *, pass_name: str = "inference",
                  threads: int | None = None) -> BuiltDeployment:
    """Build `module` as `variant` for inputs like `example` (its mode - train/eval - is the caller's)."""
    return deploy.get(variant).build(module, example, pass_name=pass_name, threads=threads)
