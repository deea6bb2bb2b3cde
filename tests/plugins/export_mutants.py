"""The export deployment's mutants (tests/mutants_variants.py) as plugins, judged by the sandbox: under the export
variant their items are judged in the trusted process, the plugin's side exporting the module it builds to ONNX and
running it in ONNX Runtime. `forges_its_graph` reports an exported graph that is not one."""

from __future__ import annotations

from mutants_variants import export_drops_running_stats
from torch import nn

from normbench import Implementation


def _torch_batchnorm(num_features: int, eps: float, affine: bool, momentum: float | None,
                     track_running_stats: bool) -> nn.Module:
    return nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=affine,
                          track_running_stats=track_running_stats)


def _forges_its_graph(num_features: int, eps: float, affine: bool, momentum: float | None,
                      track_running_stats: bool) -> nn.Module:
    from normbench.remote.server import Server

    # the plugin's own process holds the server: its description of the graph is the plugin's to forge
    def forged(self: Server, message: object, received: object) -> tuple[dict, list]:
        return {"graph": {"ops": "LayerNormalization", "opset": 18, "seconds": 0.1}}, []  # ops: not a list

    Server._op_exported_graph = forged  # type: ignore[method-assign]
    return _torch_batchnorm(num_features, eps, affine, momentum, track_running_stats)


#: name -> factory: a correct control, one whose export loses the running statistics, one that forges its graph
MUTANTS = {"control": _torch_batchnorm, "drops_stats": export_drops_running_stats,
           "forges_its_graph": _forges_its_graph}


def implementations() -> list[Implementation]:
    return [Implementation(name=f"export.{name}", family="batchnorm", factory=factory)
            for name, factory in MUTANTS.items()]
