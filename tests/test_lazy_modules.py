"""A lazy module in sys.modules whose attribute lookup raises ImportError (speechbrain's
LazyModule for a missing optional dependency) must not break hypothesis's scan of sys.modules, which made every
hypothesis-searched item a FlakyFailure blamed on the implementation, and on every implementation judged after it
in the same process. Using the module still fails as the plugin's own error."""

from __future__ import annotations

import inspect
import sys

import pytest
from helpers import impl, run
from plugins import lazy_module
from plugins.import_time import _Exact

from normbench.judge_guard import shield_lazy_modules
from normbench.sandbox import IMPORT_CHANGES, Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs


@pytest.fixture
def lazy():
    module = lazy_module.install()
    yield module
    sys.modules.pop(lazy_module.NAME, None)


def test_the_cause_a_default_getattr_does_not_catch_import_error():
    probe = lazy_module.LazyModule("probe", "speechbrain.integrations.k2_fsa")
    with pytest.raises(ImportError):
        getattr(probe, "__file__", None)  # what hypothesis's _get_local_constants does to every new module


def test_a_lazy_module_no_longer_breaks_hypothesis_here_or_for_the_next_implementation(lazy):
    for name in ("lazy.first", "lazy.next"):
        outcome = run(impl(name, "layernorm", _Exact), "shift_invariance")  # searched with hypothesis
        assert outcome.verdict == "pass", outcome.summary


def test_only_introspection_is_shielded(lazy):
    shield_lazy_modules()
    assert getattr(lazy, "__file__", None) is None
    assert not hasattr(lazy, "__path__")
    assert inspect.getmodule(test_only_introspection_is_shielded.__code__) is not None  # scans sys.modules
    with pytest.raises(ImportError, match="No module named 'k2'"):
        lazy.intersect  # noqa: B018 - using the module is still the library's error
    assert isinstance(lazy, lazy_module.LazyModule) and lazy.target == "speechbrain.integrations.k2_fsa"
    assert shield_lazy_modules() == []  # once


def test_in_the_sandbox_the_items_are_judged_and_the_module_named():
    specs = load_specs().specs
    registry = discover_isolated(["plugins.lazy_module:leaves_lazy_module", "plugins.lazy_module:uses_lazy_module"],
                                 families=specs, include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs, "ci", Limits())
    try:
        judged = {name: [pool.judge(i, "layernorm", prop, "any", "float32", "cpu")
                         for prop in ("shift_invariance", "scale_invariance")]
                  for name, i in registry.implementations.items()}
    finally:
        pool.close()
    for outcome in judged["lazy_module.LayerNorm"]:
        assert outcome.verdict == "pass", outcome.summary
        (finding,) = outcome.metrics[IMPORT_CHANGES]
        assert finding.startswith(f"sys.modules[{lazy_module.NAME!r}] raises ImportError: Lazy import of ")
        assert "made its dunder lookups raise AttributeError" in finding
    for outcome in judged["lazy_module.uses_it"]:
        assert outcome.verdict == "error"
        assert "raised ImportError: Lazy import of 'speechbrain.integrations.k2_fsa' failed" in outcome.summary
        assert "FlakyFailure" not in outcome.summary
