"""The sandbox's parts on their own: the judge's fingerprint, isolated discovery, the time limits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normbench.judge_guard import fingerprint, what_changed
from normbench.outcome import ItemKey, Outcome
from normbench.sandbox import Limits, SandboxedFactory, SandboxPool, discover_isolated
from normbench.spec import load_specs
from normbench.verdicts import Verdict


def _specs():
    return load_specs().specs


def test_fingerprint_is_stable_and_sees_patches_and_state():
    before = fingerprint()
    assert what_changed(before, fingerprint()) == []
    real = F.layer_norm
    try:
        F.layer_norm = lambda *a, **k: None
        torch.set_grad_enabled(False)
        changed = what_changed(before, fingerprint())
    finally:
        F.layer_norm = real
        torch.set_grad_enabled(True)
    assert "torch.nn.functional.layer_norm was replaced" in changed
    assert "torch state: grad mode is False, was True" in changed
    assert what_changed(before, fingerprint()) == []


def test_fingerprint_sees_a_patched_judge():
    import normbench.compare as compare

    before = fingerprint()
    real = compare.compare
    try:
        compare.compare = lambda *a, **k: None
        assert "normbench.compare.compare was replaced" in what_changed(before, fingerprint())
    finally:
        compare.compare = real


def test_discovery_survives_plugins_that_die_at_import():
    registry = discover_isolated(["plugins.exits_at_import:x", "plugins.segfault_at_import:x",
                                  "plugins.hostile:control"], families=_specs(), include_entry_points=False)
    messages = {e.source: e.message for e in registry.errors}
    assert "SystemExit: 4" in messages["--impl-path plugins.exits_at_import:x"]
    assert "SIGSEGV" in messages["--impl-path plugins.segfault_at_import:x"]
    assert list(registry.implementations) == ["hostile.control"]
    impl = registry.implementations["hostile.control"]
    assert isinstance(impl.factory, SandboxedFactory)
    try:
        impl.factory(8)
    except RuntimeError as exc:
        assert "only inside its sandbox" in str(exc)
    else:
        raise AssertionError("a sandboxed factory ran in the parent")


def test_a_name_colliding_with_an_installed_implementation_is_refused_with_both_sources():
    # Even when installed implementations are not judged, their names are taken.
    registry = discover_isolated(["plugins.hostile:impersonator"], families=_specs(), include_entry_points=False)
    assert "torch.nn.LayerNorm" not in registry.implementations
    (error,) = registry.errors
    assert error.source == "--impl-path plugins.hostile:impersonator"
    assert "is declared by entry point 'torch-builtins'" in error.message and \
        "and --impl-path plugins.hostile:impersonator" in error.message


def test_a_hanging_implementation_is_killed_and_given_up_after_two_timeouts():
    specs = _specs()
    registry = discover_isolated(["plugins.hostile:native_hang"], families=specs, include_entry_points=False)
    assert not registry.errors, registry.errors
    impl = registry.implementations["hostile.native_hang"]
    pool = SandboxPool(specs, "ci", Limits(item_timeout=2.0))
    try:
        first = pool.judge(impl, "layernorm", "forward_equivalence", "any", "float32", "cpu")
        second = pool.judge(impl, "layernorm", "shift_invariance", "any", "float32", "cpu")
        third = pool.judge(impl, "layernorm", "scale_invariance", "any", "float32", "cpu")
    finally:
        pool.close()
    assert first.verdict == second.verdict == third.verdict == "error"
    assert "timed out" in first.summary and "process was killed" in first.summary
    assert third.summary.startswith("not judged:") and third.duration_s < 1


def test_a_crash_costs_one_item_and_the_next_gets_a_fresh_process():
    specs = _specs()
    registry = discover_isolated(["plugins.hostile:segfault", "plugins.hostile:control"], families=specs,
                                 include_entry_points=False)
    pool = SandboxPool(specs, "ci", Limits())
    try:
        crashed = pool.judge(registry.implementations["hostile.segfault"], "layernorm", "forward_equivalence", "any",
                             "float32", "cpu")
        fine = pool.judge(registry.implementations["hostile.control"], "layernorm", "forward_equivalence", "any",
                          "float32", "cpu")
    finally:
        pool.close()
    assert crashed.verdict == "error" and "SIGSEGV" in crashed.summary
    assert fine.verdict == "pass", fine.summary
    # each outcome is typed and names the item it was asked for (the sandbox's arguments, never the child's words),
    # a crash's as much as a verdict's
    for outcome, name in ((crashed, "hostile.segfault"), (fine, "hostile.control")):
        key = ItemKey("layernorm", name, "forward_equivalence", "any", "float32")
        assert isinstance(outcome, Outcome) and outcome.key == key and outcome.test_id == key.test_id
        assert (outcome.check, outcome.expect) == ("forward_equivalence", "holds")
    assert crashed.verdict is Verdict.ERROR and fine.verdict is Verdict.PASS


def test_only_the_compile_variant_is_warmed_in_the_forkserver():
    from normbench import sandbox

    saved = sandbox._WARM_VARIANTS
    try:
        sandbox.warm_variants(["eager", "export", "compile", "compile"])
        assert sandbox._WARM_VARIANTS == ("compile",)  # ONNX Runtime's import starts a thread: never pre-fork
        sandbox.warm_variants(["eager"])
        assert sandbox._WARM_VARIANTS == ()
    finally:
        sandbox._WARM_VARIANTS = saved


@pytest.mark.slow
def test_the_compile_preload_leaves_no_thread_behind_and_its_forks_compile():
    # The forkserver forks every judging child: a thread left by the warm-up (tqdm's monitor, an OpenMP pool)
    # would be a fork hazard; and a child forked after it must still compile and run.
    import subprocess
    import sys

    script = """
import os, torch
tasks = lambda: len(os.listdir('/proc/self/task'))
before = tasks()
import normbench.preload.compile
assert tasks() == before, (before, tasks())
pid = os.fork()
if pid == 0:
    x = torch.randn(4, 6)
    y = torch.compile(torch.nn.LayerNorm(6), dynamic=True)(x)
    os._exit(0 if torch.allclose(y, torch.nn.functional.layer_norm(x, (6,)), atol=1e-5) else 3)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "child 0" in done.stdout
