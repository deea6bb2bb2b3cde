"""The honesty mutants (tests/mutants_honesty.py) as plugins, judged by the sandbox: the items of `output_not_alias`
and `no_stale_output` are judged in the trusted process, so what the module does to its input's memory has to
reach it as data (normbench.remote.aliases) or as writes into the caller's tensors. `control` is correct."""

from __future__ import annotations

from mutants_honesty import (
    DataPtrCacheLayerNorm,
    GradOutputScribbleLayerNorm,
    IdCacheLayerNorm,
    InplaceLayerNorm,
    ScratchInputLayerNorm,
    StaticOutputLayerNorm,
    VersionCacheLayerNorm,
    _LayerNormBase,
)

from normbench import Implementation


class Correct(_LayerNormBase):
    def forward(self, x):  # noqa: ANN001, ANN201 - a plugin's forward
        return self.norm(x)


MUTANTS = {"in_place": InplaceLayerNorm, "scratch_input": ScratchInputLayerNorm,
           "dy_scribble": GradOutputScribbleLayerNorm, "data_ptr_cache": DataPtrCacheLayerNorm,
           "id_cache": IdCacheLayerNorm, "static_output": StaticOutputLayerNorm,
           "version_cache": VersionCacheLayerNorm, "control": Correct}


def implementations() -> list[Implementation]:
    return [Implementation(name=f"honesty.{name}", family="layernorm", factory=factory, supports_gradcheck=False,
                           dtypes=("float32",))
            for name, factory in MUTANTS.items()]
