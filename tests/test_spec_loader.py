"""Spec errors: each gives one clear message naming the file and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

from factories.spec_files import GOOD, error_of, write
from helpers import specs

from normbench.checks import CHECKS
from normbench.spec import builtin_spec_paths, load_defaults, load_spec, load_specs


def test_builtin_specs_load_and_name_registered_checks():
    assert {"layernorm", "rmsnorm", "batchnorm", "groupnorm", "instancenorm"} <= set(specs())
    for path in builtin_spec_paths():
        load_spec(path, known_checks=CHECKS)


def test_good_spec_loads(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), known_checks=CHECKS)
    assert spec.family == "toy" and spec.default_params() == {"eps": 1e-5, "affine": True}
    assert spec.properties[0].expect == {"any": "holds"}


def test_malformed_yaml_names_file_and_line(tmp_path):
    err = error_of(write(tmp_path, GOOD + "properties: [unclosed\n"))
    assert "toy.yaml" in str(err) and "line" in err.key and "malformed YAML" in str(err)


def test_unknown_top_level_key(tmp_path):
    err = error_of(write(tmp_path, GOOD + "colour: blue\n"))
    assert "toy.yaml" in str(err) and "unknown key" in str(err) and "colour" in str(err)


def test_unknown_nested_key_names_its_path(tmp_path):
    text = GOOD.replace("forward_equivalence: holds", "forward_equivalence: {expect: holds, expct: 1}")
    err = error_of(write(tmp_path, text))
    assert err.key == "properties.forward_equivalence" and "expct" in str(err)


def test_wrong_type_names_the_key(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("default: 1.0e-5", "default: tiny")))
    assert err.key == "params.eps.default" and "tiny" in str(err)


def test_bad_expectation_value(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("forward_equivalence: holds", "forward_equivalence: maybe")))
    assert err.key == "properties.forward_equivalence"


def test_unknown_check_is_named(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("forward_equivalence: holds", "telepathy: holds")))
    assert err.key == "properties.telepathy" and "unknown check 'telepathy'" in str(err)


def test_python_object_tag_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = GOOD + f"extra: !!python/object/apply:os.system ['touch {marker}']\n"
    err = error_of(write(tmp_path, text))
    assert "safe_load" in str(err) and "line" in err.key
    assert not marker.exists()


def test_missing_required_key(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("summary: a toy family\n", "")))
    assert "summary" in str(err) and "toy.yaml" in str(err)


def test_property_dtype_without_tolerance(tmp_path):
    text = GOOD.replace("forward_equivalence: holds", "forward_equivalence: {expect: holds, dtypes: [float16]}")
    err = error_of(write(tmp_path, text))
    assert err.key == "properties.forward_equivalence.dtypes"


def test_bad_spec_is_recorded_and_others_still_load(tmp_path):
    write(tmp_path, GOOD.replace("family: toy", "family: toy_ok"), "ok.yaml")
    write(tmp_path, "family: [\n", "broken.yaml")
    loaded = load_specs([tmp_path], known_checks=CHECKS)
    assert "toy_ok" in loaded.specs and "layernorm" in loaded.specs
    assert [Path(e.path).name for e in loaded.errors] == ["broken.yaml"]


def test_duplicate_family_is_an_error(tmp_path):
    write(tmp_path, GOOD.replace("family: toy", "family: layernorm"), "dup.yaml")
    loaded = load_specs([tmp_path], known_checks=CHECKS)
    assert any("already defined" in str(e) for e in loaded.errors)


DEFAULTS = textwrap.dedent("""\
    defaults:
      frozen_parameters:
        why: every subset of inputs requiring grad
        timeout: 30
      leading_ranks:
        options: {ranks: [1, 4]}
        why: any leading shape
    """)
FAMILY = GOOD.replace("  forward_equivalence: holds\n", textwrap.indent(textwrap.dedent("""\
    forward_equivalence: holds
    frozen_parameters: {train: holds}
    leading_ranks: holds
    """), "  "))


def props(spec) -> dict:
    return {p.name: p for p in spec.properties}


def test_a_default_fills_every_field_a_property_does_not_give(tmp_path):
    defaults = load_defaults(write(tmp_path, DEFAULTS, "defaults.yaml"), known_checks=CHECKS)
    spec = props(load_spec(write(tmp_path, FAMILY), known_checks=CHECKS, defaults=defaults))
    frozen, ranks = spec["frozen_parameters"], spec["leading_ranks"]
    assert (frozen.why, frozen.timeout, dict(frozen.expect)) == ("every subset of inputs requiring grad", 30,
                                                                 {"train": "holds"})
    assert (ranks.why, dict(ranks.options), dict(ranks.expect)) == ("any leading shape", {"ranks": [1, 4]},
                                                                    {"any": "holds"})
    assert spec["forward_equivalence"].why == ""  # no default: nothing filled in


def test_a_property_overrides_its_default_field_by_field(tmp_path):
    defaults = load_defaults(write(tmp_path, DEFAULTS, "defaults.yaml"), known_checks=CHECKS)
    text = FAMILY.replace("frozen_parameters: {train: holds}", "frozen_parameters: {expect: holds, why: its own}")
    text = text.replace("leading_ranks: holds", "leading_ranks: {expect: holds, options: {ranks: [5]}}")
    spec = props(load_spec(write(tmp_path, text), known_checks=CHECKS, defaults=defaults))
    assert (spec["frozen_parameters"].why, spec["frozen_parameters"].timeout) == ("its own", 30)
    # a field given replaces the default's whole: options are not merged key by key
    assert dict(spec["leading_ranks"].options) == {"ranks": [5]} and spec["leading_ranks"].why == "any leading shape"


def test_the_shipped_defaults_fill_the_shipped_specs():
    shipped = load_defaults(known_checks=CHECKS)
    layernorm = next(p for p in builtin_spec_paths() if p.name == "layernorm.yaml")
    why = props(load_spec(layernorm, known_checks=CHECKS))["frozen_parameters"].why
    assert why == shipped["frozen_parameters"]["why"] and why not in layernorm.read_text()
    assert "defaults.yaml" not in {p.name for p in builtin_spec_paths()}  # never loaded as a spec
    assert load_specs(known_checks=CHECKS).errors == []
