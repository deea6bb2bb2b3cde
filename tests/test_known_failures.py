"""Known failures are scoped by structure: the file's implementation and whole id segments, never id text."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import specs

from normbench import Implementation
from normbench.builtins import FunctionalLayerNorm
from normbench.known_failures import KnownFailuresError, load_known_failures
from normbench.registry import Registry
from normbench.runner import build_plan

BUILTIN = Path(__file__).resolve().parents[1] / "normbench" / "suite" / "known_failures"
TORCH_LN = "torch.nn.LayerNorm"
TORCH_FP16 = "layernorm[torch.nn.LayerNorm-weight_gradient_reduction-float16]"
FORGED = "torch.nn.LayerNorm-weight_gradient_reduction-float16-evil"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load_one(path: Path) -> KnownFailuresError:
    known = load_known_failures([path])
    assert len(known.errors) == 1, known.errors
    assert not known.entries
    return known.errors[0]


def test_builtin_files_load_and_torch_keeps_its_known_failures():
    known = load_known_failures([], builtin=BUILTIN)
    assert not known.errors, known.errors
    assert {f.implementation for f in known.files} >= {TORCH_LN, "F.layer_norm", "torch.nn.BatchNorm1d"}
    reason = known.reason_for(TORCH_FP16, TORCH_LN)
    assert reason is not None and "LayerNorm backward in float16" in reason and "torch.nn.LayerNorm.yaml" in reason
    assert known.reason_for("layernorm[torch.nn.LayerNorm-weight_gradient_reduction-float32]", TORCH_LN) is None
    assert known.reason_for("batchnorm[torch.nn.BatchNorm1d-constant_rows-train-float16]",
                            "torch.nn.BatchNorm1d") is not None


def test_a_forged_name_does_not_inherit_torchs_known_failures():
    # A plugin named so that its test ids start with torch's known-failure ids, planned as the suite plans it.
    forged = Implementation(name=FORGED, family="layernorm", factory=FunctionalLayerNorm)
    registry = Registry()
    registry.add(forged)
    items = build_plan(specs(), registry, [FORGED])
    entry_ids = [e.prefix for e in load_known_failures([], builtin=BUILTIN).entries]
    # the danger is real: a text-prefix rule would have matched every one of the forged plugin's items
    textual = [i.test_id for i in items if any(i.test_id.startswith(p) for p in entry_ids)]
    assert len(textual) == len(items) > 0
    known = load_known_failures([], builtin=BUILTIN)
    assert [i.test_id for i in items if known.reason_for(i.test_id, i.impl.name)] == []
    # ... while torch's own item, planned the same way, still matches
    assert known.reason_for(TORCH_FP16, TORCH_LN) is not None


def test_an_id_matches_whole_segments_only(tmp_path):
    path = write(tmp_path, "x.yaml", """\
        implementation: x
        known_failures:
          - id: layernorm[x-gradient
            reason: a partial property name
          - id: layernorm[x-forward_equivalence-float3
            reason: a partial dtype
          - id: layernorm[x-shift_invariance
            reason: a whole property
          - id: layernorm[x-constant_rows-float16]
            reason: a whole id
        """)
    known = load_known_failures([path])
    assert not known.errors
    assert known.reason_for("layernorm[x-gradient_equivalence-float32]", "x") is None
    assert known.reason_for("layernorm[x-forward_equivalence-float32]", "x") is None
    assert known.reason_for("layernorm[x-shift_invariance-float32]", "x") == "a whole property [x.yaml]"
    assert known.reason_for("layernorm[x-shift_invariance-train-float16-cuda]", "x") == "a whole property [x.yaml]"
    assert known.reason_for("layernorm[x-constant_rows-float16]", "x") == "a whole id [x.yaml]"
    assert known.reason_for("layernorm[x-constant_rows-float16]", "y") is None


def test_an_empty_id_is_an_error(tmp_path):
    err = load_one(write(tmp_path, "empty.yaml", """\
        implementation: x
        known_failures:
          - id: ""
            reason: silence everything
        """))
    assert "empty.yaml" in str(err) and "known_failures[0]" in str(err) and "empty" in str(err)
    assert err.path.endswith("empty.yaml")


@pytest.mark.parametrize("entry_id, problem", [
    ("layernorm[torch.nn.LayerNorm-forward_equivalence", "must start with '<family>[x-' or '<family>[x]'"),
    ("layernorm[xy-forward_equivalence", "must start with"),
    ("x-forward_equivalence", "must start with"),
    ("layernorm[x", "must start with"),
    ("layernorm[x-", "ends with '-'"),
    ("layernorm[x-forward_equivalence-", "ends with '-'"),
    ("layernorm[x]-forward_equivalence", "not a test id prefix"),
    ("layernorm[x-forward equivalence", "not a test id prefix"),
])
def test_an_id_outside_the_files_implementation_is_an_error(tmp_path, entry_id, problem):
    # the first entry is good, so the message must point at the second
    err = load_one(write(tmp_path, "x.yaml", "implementation: x\nknown_failures:\n"
                         "  - {id: 'layernorm[x-shift_invariance', reason: fine}\n"
                         f"  - {{id: {entry_id!r}, reason: r}}\n"))
    assert "x.yaml" in str(err) and "known_failures[1]" in str(err) and problem in str(err), str(err)


@pytest.mark.parametrize("text, problem", [
    ("known_failures: []\n", "implementation: required"),
    ("implementation: 3\nknown_failures: []\n", "implementation: required"),
    ("implementation: ''\n", "implementation: required"),
    ("", "expected a mapping"),
    ("implementation: x\ncolour: blue\n", "unknown key(s) ['colour']"),
    ("implementation: x\nknown_failures: {id: a}\n", "known_failures: must be a list"),
    ("implementation: x\nknown_failures:\n  - id: layernorm[x-a\n", "known_failures[0]: each entry needs"),
    ("implementation: x\nknown_failures:\n  - {id: 'layernorm[x-a', reason: ' '}\n", "non-empty"),
    ("implementation: x\nknown_failures:\n  - {id: 5, reason: r}\n", "'id' must be a string"),
    ("implementation: [unclosed\n", "malformed YAML"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, text, problem):
    err = load_one(write(tmp_path, "bad.yaml", text))
    assert str(err).startswith(str(tmp_path / "bad.yaml")) and problem in str(err), str(err)


def test_a_good_file_loads(tmp_path):
    known = load_known_failures([write(tmp_path, "x.yaml", """\
        implementation: x
        known_failures:
          - id: layernorm[x-shift_invariance
            reason: r
        """)])
    assert not known.errors
    assert [(f.implementation, len(f.entries)) for f in known.files] == [("x", 1)]


def test_a_malformed_file_does_not_stop_the_others(tmp_path):
    write(tmp_path, "a_bad.yaml", "implementation: x\nknown_failures:\n  - {id: '', reason: r}\n")
    write(tmp_path, "b_good.yaml", "implementation: y\nknown_failures:\n  - {id: 'rmsnorm[y-scale', reason: r}\n")
    write(tmp_path, "c_bad.yaml", "{{{")
    known = load_known_failures([tmp_path], builtin=BUILTIN)
    assert sorted(Path(e.path).name for e in known.errors) == ["a_bad.yaml", "c_bad.yaml"]
    assert known.reason_for("rmsnorm[y-scale-float32]", "y") == "r [b_good.yaml]"
    assert known.reason_for(TORCH_FP16, TORCH_LN) is not None


def test_a_missing_explicit_path_is_an_error_and_a_missing_builtin_is_not(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(KnownFailuresError, match="nope.yaml: no such known-failures file or directory"):
        load_known_failures([missing])
    known = load_known_failures([], builtin=tmp_path / "no_builtin_dir")
    assert not known.entries and not known.errors


def test_a_file_named_twice_is_loaded_once(tmp_path):
    path = write(tmp_path, "x.yaml", "implementation: x\nknown_failures:\n  - {id: 'layernorm[x-a', reason: r}\n")
    known = load_known_failures([tmp_path, path])
    assert len(known.entries) == 1


def test_files_for_unknown_implementations_are_reported(tmp_path):
    write(tmp_path, "typo.yaml", "implementation: torch.nn.LayerNrom\nknown_failures: []\n")
    known = load_known_failures([tmp_path], builtin=BUILTIN)
    # every implementation the shipped known-failure files name is installed here
    installed = {yaml.safe_load(f.read_text())["implementation"] for f in Path(BUILTIN).glob("*.yaml")}
    assert TORCH_LN in installed
    unknown = known.unknown_implementations(installed)
    assert [(Path(f.path).name, f.implementation) for f in unknown] == [("typo.yaml", "torch.nn.LayerNrom")]
    assert known.unknown_implementations(installed | {"torch.nn.LayerNrom"}) == []


def test_stale_uses_the_implementation_of_each_item(tmp_path):
    write(tmp_path, "x.yaml", """\
        implementation: x
        known_failures:
          - {id: 'layernorm[x-shift_invariance', reason: still fails}
          - {id: 'layernorm[x-forward_equivalence', reason: now passes}
          - {id: 'layernorm[x-no_such_property', reason: a typo}
          - {id: 'layernorm[x-scale_invariance', reason: deselected}
        """)
    write(tmp_path, "y.yaml", "implementation: y\nknown_failures:\n  - {id: 'layernorm[y-shift_invariance', "
                              "reason: y is not judged}\n")
    known = load_known_failures([tmp_path])
    planned = [("layernorm", "x", f"layernorm[x-{p}-float32]")
               for p in ("shift_invariance", "forward_equivalence", "scale_invariance")]
    outcomes = {
        "layernorm[x-shift_invariance-float32]": {"implementation": "x", "verdict": "fail"},
        "layernorm[x-forward_equivalence-float32]": {"implementation": "x", "verdict": "pass"},
    }
    assert sorted(e.reason for e in known.stale(outcomes, planned)) == ["a typo", "now passes"]
    # An item of another implementation whose id merely starts like x's is not x's item: with x's own item
    # deselected, the entry was not exercised, whatever the look-alike's verdict.
    del outcomes["layernorm[x-shift_invariance-float32]"]
    forged = "layernorm[x-shift_invariance-float32-evil-shift_invariance-float32]"
    planned.append(("layernorm", "x-shift_invariance-float32-evil", forged))
    outcomes[forged] = {"implementation": "x-shift_invariance-float32-evil", "verdict": "pass"}
    assert sorted(e.reason for e in known.stale(outcomes, planned)) == ["a typo", "now passes"]
    # once every item of x that the entry matches passes, it is stale
    outcomes["layernorm[x-shift_invariance-float32]"] = {"implementation": "x", "verdict": "pass"}
    assert sorted(e.reason for e in known.stale(outcomes, planned)) == ["a typo", "now passes", "still fails"]


def test_an_entry_for_an_item_the_bounded_variant_plan_leaves_out_is_not_stale(tmp_path):
    write(tmp_path, "x.yaml", """\
        implementation: x
        known_failures:
          - {id: 'rmsnorm[x-constant_rows-float16-export]', reason: full plan only}
          - {id: 'rmsnorm[x-constant_rows-float61-export]', reason: a typo}
        """)
    known = load_known_failures([tmp_path])
    planned = [("rmsnorm", "x", "rmsnorm[x-constant_rows-float32-export]")]
    possible = [*planned, ("rmsnorm", "x", "rmsnorm[x-constant_rows-float16-export]")]
    outcomes = {planned[0][2]: {"implementation": "x", "verdict": "fail"}}
    # against the bounded plan alone both entries look like typos; the full plan knows the float16 item
    assert sorted(e.reason for e in known.stale(outcomes, planned)) == ["a typo", "full plan only"]
    assert [e.reason for e in known.stale(outcomes, planned, possible)] == ["a typo"]
