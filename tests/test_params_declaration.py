"""The params= declaration: a callable returning (γ, β) for modules no attribute path reaches (keras 3's
torch backend, wrappers). A declaration that raises, returns something that is not the module's own Parameters, or
the wrong shapes is an error naming the implementation; one that names a Parameter the forward does not read is
flagged by the checks; a correct keras-style declaration is judged clean, in process and through the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_flags, assert_passes, run
from plugins.keras_style import KerasStyleLayerNorm, correct, keras_params, unused_weight
from torch import nn

from normbench import Implementation
from normbench.implementation import ImplementationError

ROOT = Path(__file__).resolve().parent.parent


def _keras(name: str, params, **fields) -> Implementation:
    return Implementation(name=name, family="layernorm", factory=KerasStyleLayerNorm, params=params, **fields)


def test_the_declaration_is_validated_when_declared():
    with pytest.raises(ImplementationError, match="'k.bad': params must be a callable"):
        _keras("k.bad", "gamma")
    with pytest.raises(ImplementationError, match="'k.both': declare params= or weight_attr"):
        _keras("k.both", keras_params, weight_attr="gamma")


def test_a_correct_keras_style_declaration_reaches_the_parameters():
    module = KerasStyleLayerNorm(8, 1e-5, True)
    weight, bias = correct().affine_tensors(module)
    assert weight is module._torch_params["layer_norm/gamma"] and bias is module._torch_params["layer_norm/beta"]
    # bias=False: the β the declaration returns is not judged as one
    assert _keras("k.nobias", keras_params, bias=False).affine_tensors(module)[1] is None


@pytest.mark.parametrize("prop", ["forward_equivalence", "gradient_equivalence", "shift_invariance",
                                  "scale_invariance", "module_hygiene"])
def test_a_correct_keras_style_declaration_is_judged_clean(prop):
    assert_passes(correct(), prop)


def _raises(module):
    raise KeyError("layer_norm/gamma")


def _stranger(module):
    return nn.Parameter(torch.ones(8)), None


@pytest.mark.parametrize("params, problem", [
    (_raises, "its params= declaration raised KeyError"),
    (lambda m: keras_params(m)[0], "must return a pair (weight, bias), got Parameter"),
    (lambda m: (*keras_params(m), None), "must return a pair (weight, bias), got tuple"),
    (lambda m: (m.gamma, m.beta), "returned a weight that is Variable, not an nn.Parameter"),
    (lambda m: (keras_params(m)[0].detach(), None), "returned a weight that is Tensor, not an nn.Parameter"),
    (lambda m: (keras_params(m)[0], keras_params(m)[0]), "returned the same tensor as weight and bias"),
    (lambda m: (None, keras_params(m)[1]), "returned a bias without a weight"),
    (_stranger, "returned a weight that is not one of the module's parameters"),
])
def test_a_wrong_declaration_is_an_error_naming_the_implementation(params, problem):
    outcome = run(_keras("k.wrong", params), "forward_equivalence")
    assert outcome.verdict == "error", outcome.summary
    assert "implementation 'k.wrong'" in outcome.summary and problem in outcome.summary, outcome.summary


class _TwoShapes(KerasStyleLayerNorm):
    def __init__(self, c: int, eps: float, affine: bool) -> None:
        super().__init__(c, eps, affine)
        self.wide = nn.Parameter(torch.ones(2 * c))


def test_a_declaration_of_the_wrong_shape_is_an_error():
    wide = Implementation(name="k.wide", family="layernorm", factory=_TwoShapes, params=lambda m: (m.wide, None))
    outcome = run(wide, "forward_equivalence")
    assert outcome.verdict == "error" and "k.wide" in outcome.summary
    assert "returned a weight of shape" in outcome.summary and "features" in outcome.summary, outcome.summary
    mixed = Implementation(name="k.mixed", family="layernorm", factory=_TwoShapes,
                           params=lambda m: (keras_params(m)[0], m.wide))
    outcome = run(mixed, "forward_equivalence")
    assert outcome.verdict == "error" and "returned a bias of shape" in outcome.summary, outcome.summary


def test_a_declared_parameter_the_forward_does_not_read_is_flagged():
    # the randomized γ is the decoy; the module still computes with its own γ = 1
    assert_flags(unused_weight(), "forward_equivalence")
    assert_flags(unused_weight(), "gradient_equivalence")


@pytest.mark.slow
def test_through_the_sandbox_the_keras_style_layer_norm_conforms(tmp_path):
    """Discovery sends only the declaration's name (SandboxedParams); the judging process runs the real one. The
    float16 / bfloat16 dγ items are torch's F.layer_norm's, inherited: the layer calls it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "--no-record",
                           "-rA", "--impl-path", "plugins.keras_style:correct", "--impl", "keras_style.LayerNorm",
                           "--impl-path", "plugins.keras_style:unused_weight", "--impl", "keras_style.UnusedWeight",
                           "-k", "forward_equivalence or weight_gradient_reduction or shift_invariance"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    rows = {name: next((line for line in out.splitlines() if line.startswith(f"  {name}  ")), "")
            for name in ("keras_style.LayerNorm", "keras_style.UnusedWeight")}
    assert "not judged" in rows["keras_style.LayerNorm"], out[-4000:]  # -k leaves most of its plan unjudged
    assert "weight_gradient_reduction (xf inherited)" in out
    assert "FAILED suite/conformance.py::layernorm[keras_style.LayerNorm-" not in out
    assert "PASSED suite/conformance.py::layernorm[keras_style.LayerNorm-forward_equivalence-float32]" in out
    assert "does not conform" in rows["keras_style.UnusedWeight"], out[-4000:]
    assert "FAILED suite/conformance.py::layernorm[keras_style.UnusedWeight-forward_equivalence-float32]" in out
    assert proc.returncode == 1
