"""Implementation names become test ids, node ids and record keys: a name that would collide or hide is refused."""

from __future__ import annotations

import pytest
from helpers import specs

from normbench import Implementation, ImplementationError
from normbench.builtins import FunctionalLayerNorm
from normbench.registry import discover


def make(name: str) -> Implementation:
    return Implementation(name=name, family="layernorm", factory=FunctionalLayerNorm)


@pytest.mark.parametrize("name, problem", [
    ("a::b", "'::'"),
    ("mykernels::LayerNorm", "'::'"),
    ("a[b", "'[' or ']'"),
    ("a]b", "'[' or ']'"),
    (" leading", "start or end with a space"),
    ("trailing ", "start or end with a space"),
    ("tab\there", r"'\t'"),
    ("new\nline", r"'\n'"),
    ("carriage\rreturn", r"'\r'"),
    ("nul\x00byte", "U+0000"),
    ("escape\x1b(B", "U+001B"),
    ("no\u00a0break", "U+00A0"),
    ("zero\u200bwidth", "U+200B"),
    ("bidi\u202eoverride", "U+202E"),
    ("line\u2028separator", "U+2028"),
])
def test_names_that_break_or_forge_ids_are_refused(name, problem):
    with pytest.raises(ImplementationError) as info:
        make(name)
    message = str(info.value)
    assert message.startswith(f"implementation {name!r}: ") and problem in message, message


@pytest.mark.parametrize("name", [
    "torch.nn.LayerNorm",
    "my kernels/v2 (fused)",
    "a-b_c.d",
    "a:b",
    "torch.nn.LayerNorm-weight_gradient_reduction-float16-evil",  # legal; tests/test_known_failures.py shows
    "ÜnicodeNorm",                                                # it inherits nothing
])
def test_ordinary_names_are_accepted(name):
    assert make(name).name == name


def test_names_that_would_collide_as_node_ids_cannot_both_exist():
    # 'a::b' and 'c::b' both end in '::b', which is how a node id is split back into its test id
    for name in ("a::b", "c::b"):
        with pytest.raises(ImplementationError, match="'::'"):
            make(name)


def test_a_plugin_with_a_bad_name_is_its_own_error_and_the_others_load(tmp_path, monkeypatch):
    (tmp_path / "bad_name_plugin.py").write_text(
        "from normbench import Implementation\n"
        "from normbench.builtins import FunctionalLayerNorm\n"
        "def implementations():\n"
        "    return [Implementation(name='evil::LayerNorm', family='layernorm', factory=FunctionalLayerNorm)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = discover(["bad_name_plugin:implementations"], families=specs())
    assert "torch.nn.LayerNorm" in registry.implementations
    assert not any("::" in name for name in registry.implementations)
    messages = [str(e) for e in registry.errors]
    assert any("bad_name_plugin" in m and "'evil::LayerNorm'" in m and "'::'" in m for m in messages), messages
