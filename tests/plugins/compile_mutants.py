"""The compile deployment's mutants (tests/mutants_variants.py) as plugins, judged by the sandbox: under the compile
variant their items are judged in the trusted process, the plugin's side compiling the module it builds."""

from __future__ import annotations

from mutants_variants import compiler_fails, recompiles_every_shape, sloppy_when_compiled
from torch import nn

from normbench import Implementation


def _torch_layernorm(num_features: int, eps: float, affine: bool) -> nn.Module:
    return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine)


#: name -> factory: a correct control, one that diverges only when compiled, one torch.compile fails on, one that
#: recompiles on every shape
MUTANTS = {"control": _torch_layernorm, "sloppy": sloppy_when_compiled, "compiler_fails": compiler_fails,
           "recompiles": recompiles_every_shape}


def implementations() -> list[Implementation]:
    return [Implementation(name=f"compile.{name}", family="layernorm", factory=factory)
            for name, factory in MUTANTS.items()]
