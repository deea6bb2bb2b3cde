"""Module-hygiene mutants whose bug lives in the module's own copy and checkpoint machinery, where the trusted judge
(normbench.remote) must run the plugin's module's own ``__deepcopy__``, ``state_dict`` and ``load_state_dict``, not
its mirror's: with the mirror's defaults the two checkpoint mutants pass, and the self-copy in train mode fails with
another summary (its copy's train step never reaches the original's mirror)."""

from __future__ import annotations

from typing import Any

import torch
from mutants_contexts import Float32ConstantLayerNorm
from torch import nn


class PlainLayerNorm(nn.LayerNorm):
    """torch's LayerNorm, built from the layernorm family's parameters: correct."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, elementwise_affine=affine)


class SelfCopyBatchNorm(nn.BatchNorm1d):
    """``copy.deepcopy`` returns the module itself: a train step of the "copy" moves the original's statistics, and
    a change to the copy's γ is a change to the original's."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SelfCopyBatchNorm:
        return self


def _drop_running_mean(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    state.pop(prefix + "running_mean", None)


class CheckpointDropsMeanBatchNorm(nn.BatchNorm1d):
    """A state_dict hook drops the running mean from every checkpoint (the buffer itself is registered and
    persistent, so only the module's own state_dict shows it)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        self._register_state_dict_hook(_drop_running_mean)


class IgnoresLoadLayerNorm(PlainLayerNorm):
    """``load_state_dict`` silently restores nothing (its ``_load_from_state_dict`` is a no-op): a checkpoint round
    trip keeps the fresh module's own γ and β."""

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        return None


class HidesWeightFromTheAttributeScan(PlainLayerNorm):
    """Correct, but its first forward patches the protocol's server in its own process so that the scan of what
    ``.to(dtype)`` left leaves out its registered γ and β: a hostile plugin's side, as the trusted judge meets it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from normbench.remote import server

        original = server.Server._op_attributes

        def hiding(self_: Any, message: Any, received: Any) -> Any:
            reply, out = original(self_, message, received)
            return {"attributes": [a for a in reply["attributes"] if a[3] is None]}, out

        server.Server._op_attributes = hiding  # type: ignore[method-assign]
        return super().forward(x)


class CountsLiveLayerNorm(PlainLayerNorm):
    """Correct; each forward prints how many modules of its class are alive in its process (deep copies included),
    so a test can see what the trusted judge leaves behind over there between items."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import gc

        gc.collect()
        print(f"live: {sum(type(o) is CountsLiveLayerNorm for o in gc.get_objects())}", flush=True)
        return super().forward(x)


class PlainStatsBatchNorm(nn.BatchNorm1d):
    """torch's BatchNorm1d with its running variance a plain tensor attribute: no checkpoint or ``.to`` sees it, and
    the trusted process cannot mirror it (the item is judged beside the module, saying why)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, momentum: float | None = 0.1,
                 track_running_stats: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        if self.running_var is not None:
            var = self._buffers.pop("running_var")
            self.__dict__["running_var"] = var


class SwapsTheAttributeScan(Float32ConstantLayerNorm):
    """Keeps an unconverted float32 constant, and its first forward swaps the code of the scan of what ``.to(dtype)``
    left (normbench.remote.attributes.tensor_attributes, which runs over there) for one that reports registered
    tensors only: the function object stays where the fingerprint looks, its code does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from normbench.remote import attributes

        def registered_only(module: nn.Module) -> list[tuple[str, str, torch.dtype, str | None]]:
            return [(prefix, name, t.dtype, f"{prefix}.{name}" if prefix else name)
                    for prefix, sub in module.named_modules()
                    for name, t in [*sub._parameters.items(), *sub._buffers.items()] if t is not None]

        attributes.tensor_attributes.__code__ = registered_only.__code__
        return super().forward(x)
