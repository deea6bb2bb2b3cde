"""What a plugin's *import* changes is one finding about the implementation, not an error on every item.

Libraries change torch when imported: importing torch._dynamo (transformers, lightning, ...) rebinds
torch.manual_seed to torch's own wrapper of it, torch_geometric wraps torch.index_select with functools.wraps,
speechbrain sets the float32 matmul precision. Their items must get real verdicts, with the change named once;
what an item's calls change is still tampering, and so is an import that changes normbench itself, replaces a
torch function with one that does not wrap it, or leaves grad mode off.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from factories.suite_runs import run_suite

from normbench.judge_guard import fingerprint, import_changes, what_changed
from normbench.outcome import Outcome
from normbench.sandbox import IMPORT_CHANGES, Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs

# -- the rule, in this process -----------------------------------------------------------------------------------


@pytest.fixture
def restore_torch():
    saved = (torch.manual_seed, torch.index_select, F.layer_norm, torch.get_float32_matmul_precision())
    yield
    torch.manual_seed, torch.index_select, F.layer_norm = saved[:3]
    torch.set_float32_matmul_precision(saved[3])
    torch.set_grad_enabled(True)
    if "mean" in vars(torch.Tensor):
        del torch.Tensor.mean


def test_torch_wrapping_its_own_function_is_never_tampering(restore_torch):
    # What `import torch._dynamo` does (torch/_dynamo/__init__.py), without importing it into this process.
    before = fingerprint()
    torch.manual_seed = torch._disable_dynamo(torch.manual_seed)
    assert what_changed(before, fingerprint()) == []
    found = import_changes(before, fingerprint())
    assert not found.blocking
    (finding,) = found.findings
    assert finding.startswith("torch.manual_seed was wrapped by torch itself (")
    assert "torch/_compile.py" in finding


def test_a_plugins_wrapper_is_a_finding_at_import_and_tampering_in_a_call(restore_torch):
    before = fingerprint()
    real = torch.index_select
    torch.index_select = functools.wraps(real)(lambda *args, **kwargs: real(*args, **kwargs))
    found = import_changes(before, fingerprint())
    assert not found.blocking
    (finding,) = found.findings
    assert finding.startswith("torch.index_select was replaced by a wrapper of the original (its __wrapped__): ")
    assert ".<lambda> in test_import_time_changes.py:" in finding  # the wrapper's own code, not the name it copied
    assert what_changed(before, fingerprint()) == [finding]


def test_a_patched_tensor_method_is_seen_though_torch_tensor_only_inherits_it(restore_torch):
    # torch.Tensor.mean lives in torch._C.TensorBase; assigning it adds a name to torch.Tensor that shadows it.
    before = fingerprint()
    real = torch.Tensor.mean
    torch.Tensor.mean = functools.wraps(real)(lambda self, *args, **kwargs: real(self, *args, **kwargs))
    assert any(f.startswith("torch.Tensor.mean was replaced by a wrapper") for f in
               import_changes(before, fingerprint()).findings)
    torch.Tensor.mean = lambda self, *args, **kwargs: self.sum()
    assert "torch.Tensor.mean was replaced" in what_changed(before, fingerprint())
    assert import_changes(before, fingerprint()).blocking


def test_state_is_a_finding_except_grad_mode_off(restore_torch):
    before = fingerprint()
    torch.set_float32_matmul_precision("medium")
    found = import_changes(before, fingerprint())
    assert found.findings == ["torch state: float32 matmul precision is 'medium', was 'highest'"]
    assert not found.blocking
    torch.set_grad_enabled(False)
    found = import_changes(before, fingerprint())
    assert found.blocking == ["torch state: grad mode is False, was True"]
    assert any("autograd" in r for r in found.reasons)


def test_a_replacement_that_does_not_wrap_and_any_change_to_normbench_block(restore_torch):
    import normbench.compare as compare

    before = fingerprint()
    F.layer_norm = lambda *args, **kwargs: None
    real = compare.compare
    compare.compare = functools.wraps(real)(lambda *args, **kwargs: real(*args, **kwargs))
    try:
        found = import_changes(before, fingerprint())
    finally:
        compare.compare = real
    assert found.findings == []
    assert "torch.nn.functional.layer_norm was replaced by an object that does not wrap the original" in found.blocking
    assert any(b.startswith("normbench.compare.compare was replaced by a wrapper") for b in found.blocking)
    assert any("tampering with the judge" in r for r in found.reasons)
    assert any("change the truth itself" in r for r in found.reasons)


# -- in the sandbox ----------------------------------------------------------------------------------------------

_NAMES = ("dynamo", "wraps_index_select", "wraps_tensor_mean", "matmul_precision", "replaces_layer_norm",
          "patches_judge", "grad_mode_off", "lazy_dynamo", "replaces_seed", "wraps_seed_in_forward")
_ITEMS = (("forward_equivalence", "float32"), ("shift_invariance", "float32"), ("gradcheck", "float64"))


@pytest.fixture(scope="module")
def judged() -> dict[str, list[Outcome]]:
    specs = load_specs().specs
    sources = [f"plugins.import_time:{n}" for n in _NAMES] + ["plugins.imports_dynamo:implementation"]
    registry = discover_isolated(sources, families=specs, include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs, "ci", Limits())
    try:
        return {name: [pool.judge(impl, "layernorm", prop, "any", dtype, "cpu") for prop, dtype in _ITEMS]
                for name, impl in registry.implementations.items()}
    finally:
        pool.close()


def _findings(outcome: Outcome) -> list[str]:
    return outcome.metrics.get(IMPORT_CHANGES, [])


@pytest.mark.parametrize(("name", "finding"), [
    ("import_time.dynamo", "torch.manual_seed was wrapped by torch itself"),
    ("imports_dynamo.LayerNorm", "torch.manual_seed was wrapped by torch itself"),
    ("import_time.wraps_index_select", "torch.index_select was replaced by a wrapper of the original"),
    ("import_time.wraps_tensor_mean", "torch.Tensor.mean was replaced by a wrapper of the original"),
    ("import_time.matmul_precision", "torch state: float32 matmul precision is 'medium', was 'highest'"),
])
def test_an_import_that_changes_torch_harmlessly_is_judged_and_named_once(judged, name, finding):
    outcomes = judged[name]
    assert [o.verdict for o in outcomes] == ["pass"] * len(_ITEMS), [o.summary for o in outcomes]
    for outcome in outcomes:
        assert any(f.startswith(finding) for f in _findings(outcome)), _findings(outcome)
    # the note is on the first item judged, not on every one
    assert f"note: importing {name!r} changed torch" in outcomes[0].summary
    assert finding in outcomes[0].summary
    assert not any("note: importing" in o.summary for o in outcomes[1:])


def test_torch_imported_lazily_during_a_call_is_not_tampering(judged):
    outcomes = judged["import_time.lazy_dynamo"]
    assert [o.verdict for o in outcomes] == ["pass"] * len(_ITEMS), [o.summary for o in outcomes]
    assert not any(_findings(o) for o in outcomes)


@pytest.mark.parametrize(("name", "says"), [
    ("import_time.replaces_seed", "torch.manual_seed was replaced"),
    ("import_time.wraps_seed_in_forward", "torch.manual_seed was replaced by a wrapper of the original"),
])
def test_a_call_that_replaces_a_torch_function_is_still_an_error(judged, name, says):
    for outcome in judged[name]:
        assert outcome.verdict == "error"
        assert "changed the judge or torch's global state" in outcome.summary
        assert says in outcome.summary


@pytest.mark.parametrize(("name", "says"), [
    ("import_time.patches_judge", ("normbench.compare.compare was replaced", "tampering with the judge")),
    ("import_time.replaces_layer_norm", ("torch.nn.functional.layer_norm was replaced by an object that does not "
                                         "wrap the original", "change the truth itself")),
    ("import_time.grad_mode_off", ("torch state: grad mode is False, was True", "autograd")),
])
def test_an_import_that_leaves_no_verdict_trustworthy_is_an_error_on_every_item(judged, name, says):
    for outcome in judged[name]:
        assert outcome.verdict == "error"
        assert f"importing implementation {name!r}" in outcome.summary
        assert "none of its items can be judged" in outcome.summary
        for text in says:
            assert text in outcome.summary


# -- through pytest suite: the record and the terminal summary ---------------------------------------------------

@pytest.mark.slow
def test_the_run_records_the_finding_and_prints_it_once_per_implementation(tmp_path):
    args = []
    for name in ("dynamo", "matmul_precision", "patches_judge"):
        args += ["--impl-path", f"plugins.import_time:{name}"]
    proc = run_suite("-p", "no:xdist", "--no-entry-points", "--results-dir", str(tmp_path), *args,
                     "-k", "forward_equivalence-float32", timeout=600)
    out = proc.stdout
    assert "INTERNALERROR" not in out + proc.stderr, out[-3000:]
    record = json.loads(next(Path(tmp_path, "raw").glob("*/conformance.json")).read_text())
    outcomes = {o["implementation"]: o for o in record["outcomes"].values()
                if o.get("verdict") != "unjudged" and o.get("implementation")}
    assert outcomes["import_time.dynamo"]["verdict"] == "pass"
    assert outcomes["import_time.matmul_precision"]["verdict"] == "pass"
    assert outcomes["import_time.patches_judge"]["verdict"] == "error"
    assert outcomes["import_time.matmul_precision"]["metrics"][IMPORT_CHANGES] == [
        "torch state: float32 matmul precision is 'medium', was 'highest'"]
    summary = out[out.index("normbench summary"):]
    assert "import-time changes" in summary
    lines = [line.strip() for line in summary.splitlines()]
    assert sum(line.startswith("import_time.dynamo: its import changed torch") for line in lines) == 1
    assert sum(line.startswith("import_time.matmul_precision: its import changed torch") for line in lines) == 1
    assert not any(line.startswith("import_time.patches_judge:") for line in lines)


def test_a_normbench_function_whose_code_is_swapped_is_tampering():
    # the function object stays where every name above points; only its __code__ tells (a swapped scan of what
    # .to(dtype) left, run by the trusted judge's plugin side, would report an unconverted constant away)
    import normbench.compare as compare

    before = fingerprint()
    original = compare.compare.__code__
    try:
        compare.compare.__code__ = (lambda actual, truth, dtype, tolerance, reduction_length=1: None).__code__
        changed = what_changed(before, fingerprint())
        blocking = import_changes(before, fingerprint()).blocking
    finally:
        compare.compare.__code__ = original
    assert changed == ["normbench.compare.compare had its code swapped (its __code__ was replaced)"]
    assert blocking == changed
    assert what_changed(before, fingerprint()) == []
