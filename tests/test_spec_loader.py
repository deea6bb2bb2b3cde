"""Spec errors: each gives one clear message naming the file and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import specs

from normbench.checks import CHECKS
from normbench.spec import SpecError, builtin_spec_paths, load_spec, load_specs

GOOD = textwrap.dedent("""\
    family: toy
    summary: a toy family
    reference: layernorm
    layout: {features_axis: -1, ranks: [2], reduce: token, moments: centred}
    params:
      eps: {type: number, default: 1.0e-5}
      affine: {type: boolean, default: true}
    tolerances:
      float32: {forward: {rel: 8, abs: 8, red: 2}, backward: {rel: 32, abs: 32, red: 8}}
    properties:
      forward_equivalence: holds
    """)


def write(tmp_path: Path, text: str, name: str = "toy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path, known_checks=CHECKS)
    return info.value


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
