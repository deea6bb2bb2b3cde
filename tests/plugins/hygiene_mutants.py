"""The module-hygiene and foldability mutants as plugins, judged by the sandbox: their items are judged in the
trusted process, so the module's own deepcopy, state_dict, load_state_dict and what .to(dtype) left must reach it
as data. `control` / `control_bn` are correct; `plain` keeps γ / β as plain attributes, which the protocol cannot
mirror (judged beside it, saying so), and `plain_stats` its running variance; `hides_weight` lies about its registered
tensors (a protocol error); `swaps_scan` swaps the code of the scan of what .to(dtype) left (tampering)."""

from __future__ import annotations

from mutants_contexts import (
    ClosureLayerNorm,
    Float32ConstantLayerNorm,
    NonPersistentStatsBatchNorm,
    PlainAttributeLayerNorm,
)
from mutants_hygiene import (
    CheckpointDropsMeanBatchNorm,
    CountsLiveLayerNorm,
    HidesWeightFromTheAttributeScan,
    IgnoresLoadLayerNorm,
    PlainLayerNorm,
    PlainStatsBatchNorm,
    SelfCopyBatchNorm,
    SwapsTheAttributeScan,
)
from mutants_numerics import BatchStatsInEvalBatchNorm
from torch import nn

from normbench import Implementation

#: what fused kernels declare (mutants_contexts.FUSED): the hygiene check converts to a half dtype
FIELDS = {"dtypes": ("float32", "float16", "bfloat16"), "supports_gradcheck": False}

MUTANTS = {
    "control": ("layernorm", PlainLayerNorm), "closure": ("layernorm", ClosureLayerNorm),
    "fp32_const": ("layernorm", Float32ConstantLayerNorm), "plain": ("layernorm", PlainAttributeLayerNorm),
    "ignores_load": ("layernorm", IgnoresLoadLayerNorm), "hides_weight": ("layernorm", HidesWeightFromTheAttributeScan),
    "counts_live": ("layernorm", CountsLiveLayerNorm), "swaps_scan": ("layernorm", SwapsTheAttributeScan),
    "control_bn": ("batchnorm", nn.BatchNorm1d), "nonpersistent": ("batchnorm", NonPersistentStatsBatchNorm),
    "self_copy": ("batchnorm", SelfCopyBatchNorm), "drops_mean": ("batchnorm", CheckpointDropsMeanBatchNorm),
    "batch_stats_in_eval": ("batchnorm", BatchStatsInEvalBatchNorm), "plain_stats": ("batchnorm", PlainStatsBatchNorm),
}


def implementations() -> list[Implementation]:
    return [Implementation(name=f"hygiene.{name}", family=family, factory=factory, **FIELDS)
            for name, (family, factory) in MUTANTS.items()]
