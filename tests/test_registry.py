"""Implementation contract and plugin discovery: every plugin error is reported for that plugin only."""

from __future__ import annotations

import pytest
from helpers import specs

from normbench import Implementation, ImplementationError
from normbench.builtins import FunctionalLayerNorm
from normbench.registry import discover, load_path

BUILTINS = {"torch.nn.LayerNorm", "F.layer_norm", "torch.nn.RMSNorm", "F.rms_norm", "torch.nn.BatchNorm1d",
            "torch.nn.GroupNorm", "torch.nn.InstanceNorm1d", "reference.layernorm", "reference.rmsnorm",
            "reference.batchnorm", "reference.groupnorm", "reference.instancenorm"}


def test_builtins_are_registered_through_entry_points():
    registry = discover(families=specs())
    assert BUILTINS <= set(registry.implementations)
    assert all(registry.implementations[n].source.startswith("entry point") for n in BUILTINS)


def test_example_plugin_is_discovered_through_its_entry_point():
    # examples/plugin is a real package; CI installs it (README's test command does too).
    registry = discover(families=specs())
    assert "example.TwoPassLayerNorm" in registry.implementations
    assert "entry point 'example'" in registry.implementations["example.TwoPassLayerNorm"].source


def test_unknown_field_is_an_error_naming_it():
    with pytest.raises(ImplementationError, match="unknown field.*'colour'"):
        Implementation.from_dict({"name": "x", "family": "layernorm", "factory": FunctionalLayerNorm,
                                  "colour": "red"})
    with pytest.raises(TypeError):
        Implementation(name="x", family="layernorm", factory=FunctionalLayerNorm, colour="red")  # type: ignore


@pytest.mark.parametrize("fields, message", [
    ({"name": ""}, "non-empty"),
    ({"name": "a[b]"}, "may not contain"),
    ({"dtypes": ("float8",)}, "unknown dtypes"),
    ({"devices": ("tpu",)}, "unknown devices"),
    ({"factory": 3}, "must be callable"),
    ({"mask_true_means": "maybe"}, "mask_true_means"),
])
def test_malformed_implementation(fields, message):
    base = {"name": "x", "family": "layernorm", "factory": FunctionalLayerNorm}
    with pytest.raises(ImplementationError, match=message):
        Implementation(**{**base, **fields})


@pytest.mark.parametrize("path, message", [
    ("no_colon", "expected the form 'module:attribute'"),
    ("plugins.import_error:anything", "No module named 'normbench_this_module_does_not_exist'"),
    ("plugins.broken:missing", "has no attribute 'missing'"),
    ("plugins.broken:returns_string", "expected a normbench.Implementation"),
    ("plugins.broken:raises_on_call", "plugin setup exploded"),
])
def test_bad_impl_paths_give_clear_messages(path, message):
    with pytest.raises(ImplementationError, match=message):
        load_path(path)


def test_a_broken_plugin_does_not_hide_the_others():
    registry = discover(["plugins.broken:raises_on_call", "plugins.broken:nan_output",
                         "plugins.broken:unknown_family"], families=specs())
    assert "broken.nan_output" in registry.implementations
    assert BUILTINS <= set(registry.implementations)
    messages = [str(e) for e in registry.errors]
    assert any("plugin setup exploded" in m for m in messages)
    assert any("'no_such_family', which has no spec" in m for m in messages)


def test_duplicate_names_are_refused_in_both_declarations():
    registry = discover(["normbench.builtins:torch_implementations"], families=specs())
    assert "torch.nn.LayerNorm" not in registry.implementations
    messages = [str(e) for e in registry.errors if "'torch.nn.LayerNorm'" in str(e)]
    assert len(messages) == 2 and all("entry point 'torch-builtins'" in m and
                                      "--impl-path normbench.builtins:torch_implementations" in m for m in messages)


def test_factory_errors_name_the_implementation():
    impl = load_path("plugins.broken:factory_raises")[0]
    with pytest.raises(ImplementationError, match="'broken.factory_raises'.*this factory always fails"):
        impl.build(8, {"eps": 1e-5, "affine": True})
