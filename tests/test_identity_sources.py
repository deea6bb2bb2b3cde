"""Identity the parent owns: an implementation's `source` is where the registry found it, never what
the plugin (or its process) says, and a name declared twice is refused in both declarations, both sources named."""

from __future__ import annotations

import pytest
from helpers import specs
from plugins.identity import TORCH_BUILTINS

from normbench import Implementation
from normbench.builtins import FunctionalLayerNorm
from normbench.registry import PluginError, Registry, discover
from normbench.sandbox import discover_isolated

DUP_A, DUP_B = "--impl-path plugins.identity:dup_a", "--impl-path plugins.identity:dup_b"


def errors_about(registry: Registry, name: str) -> list[PluginError]:
    return [e for e in registry.errors if repr(name) in e.message]


@pytest.fixture(params=["isolated", "in-process"])
def find(request):
    """Both discovery paths: discover_isolated (pytest suite, normbench list / run) and discover (benchmarks)."""
    if request.param == "isolated":
        return lambda paths, **kw: discover_isolated(paths, families=specs(), **kw)
    return lambda paths, **kw: discover(paths, families=specs(), **kw)


def test_a_plugin_cannot_set_its_source(find):
    registry = find(["plugins.identity:forged_source", "plugins.identity:own_source", "plugins.identity:control"],
                    include_entry_points=False)
    assert "forged.LayerNorm" not in registry.implementations
    (error,) = errors_about(registry, "forged.LayerNorm")
    assert error.source == "--impl-path plugins.identity:forged_source"
    assert f"sets source={TORCH_BUILTINS!r}" in error.message and "never by the plugin" in error.message
    # the true label, set by the plugin itself, changes nothing; the others carry the registry's label
    assert registry.implementations["honest.LayerNorm"].source == "--impl-path plugins.identity:own_source"
    assert registry.implementations["identity.control"].source == "--impl-path plugins.identity:control"


def test_a_plugin_named_and_sourced_like_a_builtin_is_not_stored_as_it(find):
    # Before: with --no-entry-points, this was registered silently as torch's built-in, torch's source and all.
    registry = find(["plugins.identity:forged_builtin"], include_entry_points=False)
    assert "torch.nn.LayerNorm" not in registry.implementations
    assert errors_about(registry, "torch.nn.LayerNorm")


def test_the_parent_ignores_a_source_its_discovery_process_reports():
    # The plugin's import rewrites what the child sends; the parent refuses the forged label.
    registry = discover_isolated(["plugins.identity_liar:implementations"], families=specs(),
                                 include_entry_points=False)
    assert "liar.LayerNorm" not in registry.implementations
    (error,) = errors_about(registry, "liar.LayerNorm")
    assert error.source == "--impl-path plugins.identity_liar:implementations" and "sets source=" in error.message


def test_path_against_path_refuses_both(find):
    registry = find(["plugins.identity:dup_a", "plugins.identity:dup_b", "plugins.identity:control"],
                    include_entry_points=False)
    assert "dup.LayerNorm" not in registry.implementations and "identity.control" in registry.implementations
    errors = errors_about(registry, "dup.LayerNorm")
    assert sorted(e.source for e in errors) == [DUP_A, DUP_B]
    assert all(f"declared by {DUP_A} and {DUP_B}" in e.message and "no declaration of it is judged" in e.message
               for e in errors)


def test_path_against_entry_point_refuses_both(find):
    registry = find(["plugins.hostile:impersonator"])
    assert "torch.nn.LayerNorm" not in registry.implementations and "F.layer_norm" in registry.implementations
    errors = errors_about(registry, "torch.nn.LayerNorm")
    assert sorted(e.source for e in errors) == [
        "--impl-path plugins.hostile:impersonator",
        "entry point 'torch-builtins' (normbench.builtins:torch_implementations)"]


def test_one_source_declaring_a_name_twice_is_refused_and_the_same_path_twice_is_one_source(find):
    registry = find(["plugins.identity:twice", "plugins.identity:control", "plugins.identity:control"],
                    include_entry_points=False)
    assert set(registry.implementations) == {"once.LayerNorm", "identity.control"}
    (error,) = errors_about(registry, "twice.LayerNorm")
    assert "declared by --impl-path plugins.identity:twice 2 times" in error.message


@pytest.fixture
def two_entry_points(tmp_path, monkeypatch):
    """An installed distribution with two entry points declaring the same name (tests/ is on sys.path, so its
    children import plugins.identity too)."""
    info = tmp_path / "normbench_dup_test-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: normbench-dup-test\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[normbench.implementations]\n"
                                           "dup-one = plugins.identity:dup_a\ndup-two = plugins.identity:dup_b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return ["entry point 'dup-one' (plugins.identity:dup_a)", "entry point 'dup-two' (plugins.identity:dup_b)"]


def test_entry_point_against_entry_point_refuses_both(find, two_entry_points):
    registry = find([])
    assert "dup.LayerNorm" not in registry.implementations and "torch.nn.LayerNorm" in registry.implementations
    errors = errors_about(registry, "dup.LayerNorm")
    assert sorted(e.source for e in errors) == two_entry_points
    assert all(" and ".join(two_entry_points) in e.message for e in errors)


def test_a_path_reusing_a_name_of_unjudged_entry_points_is_refused_naming_all(two_entry_points):
    registry = discover_isolated(["plugins.identity:dup_a"], families=specs(), include_entry_points=False)
    assert "dup.LayerNorm" not in registry.implementations
    (error,) = errors_about(registry, "dup.LayerNorm")  # the entry points are not judged: only the path's error
    assert error.source == DUP_A
    assert f"declared by {two_entry_points[0]}, {two_entry_points[1]} and {DUP_A}" in error.message


def test_registry_add_refuses_every_declaration_of_a_duplicate():
    registry = Registry()
    for source in ("a", "b", "c"):
        registry.add(Implementation(name="n", family="layernorm", factory=FunctionalLayerNorm, source=source))
    assert registry.implementations == {}
    assert [e.source for e in registry.errors] == ["a", "b", "c"]
    assert "declared by a, b and c" in registry.errors[-1].message
