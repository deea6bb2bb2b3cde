"""Spec values that would judge nothing (infinite / NaN / zero tolerances) and references that do not exist
are spec errors naming the file and the key, caught at load, not blamed on an implementation later."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import normbench.reference
import pytest
from factories.spec_files import GOOD, error_of, write

import normbench.spec
from normbench.checks import CHECKS
from normbench.spec import SpecError, builtin_spec_paths, load_defaults, load_spec, load_specs


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf", ".NaN", ".Inf"])
def test_a_non_finite_tolerance_is_refused_naming_the_key(tmp_path, value):
    text = GOOD.replace("forward: {rel: 8,", f"forward: {{rel: {value},")
    assert text != GOOD
    err = error_of(write(tmp_path, text))
    assert "toy.yaml" in str(err) and err.key == "tolerances.float32.forward.rel" and "not a finite" in str(err)


@pytest.mark.parametrize("key", ["rel", "abs", "red"])
def test_a_zero_or_negative_tolerance_is_refused(tmp_path, key):
    for value in (0, -1):
        coefficients = {"rel": 32, "abs": 32, "red": 8, key: value}
        backward = "backward: {" + ", ".join(f"{k}: {v}" for k, v in coefficients.items()) + "}"
        text = GOOD.replace("backward: {rel: 32, abs: 32, red: 8}", backward)
        assert text != GOOD
        err = error_of(write(tmp_path, text))
        assert err.key == f"tolerances.float32.backward.{key}" and "less than or equal to the minimum of 0" in str(err)


def test_a_non_finite_number_anywhere_is_refused(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("default: 1.0e-5", "default: .nan")))
    assert err.key == "params.eps.default" and "not a finite" in str(err)
    spec = GOOD.replace("forward_equivalence: holds",
                        "forward_equivalence: {expect: holds, timeout: .inf}")
    err = error_of(write(tmp_path, spec))
    assert err.key == "properties.forward_equivalence.timeout" and "not a finite" in str(err)


def test_small_finite_positive_tolerances_are_accepted(tmp_path):
    spec = load_spec(write(tmp_path, GOOD.replace("{rel: 8, abs: 8, red: 2}", "{rel: 1.0e-3, abs: 0.5, red: 2}")),
                     known_checks=CHECKS)
    assert spec.tolerance("float32", "forward").rel == 1e-3


@pytest.fixture
def extra_references(tmp_path, monkeypatch):
    """A folder searched for normbench.reference.<name> modules; the ones imported are forgotten afterwards."""
    folder = tmp_path / "refs"
    folder.mkdir()
    monkeypatch.setattr(normbench.reference, "__path__", [*normbench.reference.__path__, str(folder)])
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("normbench.reference."):
            del sys.modules[name]


def test_a_missing_reference_module_is_a_spec_error(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("reference: layernorm", "reference: no_such_reference")))
    assert "toy.yaml" in str(err) and err.key == "reference"
    assert "no reference module 'normbench.reference.no_such_reference'" in str(err)


def test_a_reference_without_build_is_a_spec_error(tmp_path, extra_references):
    (extra_references / "nobuild.py").write_text("def make(num_features, **params):\n    return None\n")
    err = error_of(write(tmp_path, GOOD.replace("reference: layernorm", "reference: nobuild")))
    assert err.key == "reference" and "has no callable 'build'" in str(err)


def test_a_reference_that_fails_to_import_is_a_spec_error(tmp_path, extra_references):
    (extra_references / "broken_ref.py").write_text("import normbench_no_such_dependency\n")
    (extra_references / "raising_ref.py").write_text("raise RuntimeError('reference exploded')\n")
    err = error_of(write(tmp_path, GOOD.replace("reference: layernorm", "reference: broken_ref")))
    assert err.key == "reference" and "normbench_no_such_dependency" in str(err) and "ModuleNotFoundError" in str(err)
    err = error_of(write(tmp_path, GOOD.replace("reference: layernorm", "reference: raising_ref")))
    assert err.key == "reference" and "RuntimeError: reference exploded" in str(err)


def test_an_existing_reference_with_build_is_accepted(tmp_path, extra_references):
    (extra_references / "toyref.py").write_text(textwrap.dedent("""\
        from normbench.reference.layernorm import build as build
        """))
    spec = load_spec(write(tmp_path, GOOD.replace("reference: layernorm", "reference: toyref")), known_checks=CHECKS)
    assert spec.reference == "toyref"


def test_a_spec_with_a_missing_reference_is_reported_and_the_rest_load(tmp_path):
    write(tmp_path, GOOD.replace("reference: layernorm", "reference: no_such_reference"), name="toy.yaml")
    loaded = load_specs([tmp_path], known_checks=CHECKS)
    assert [(Path(e.path).name, e.key) for e in loaded.errors] == [("toy.yaml", "reference")]
    assert "toy" not in loaded.specs and "layernorm" in loaded.specs


def defaults_error(tmp_path: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_defaults(write(tmp_path, text, "defaults.yaml"), known_checks=CHECKS)
    return info.value


@pytest.mark.parametrize("field", ["colour: blue", "expect: holds", "check: gradcheck"])
def test_an_unknown_key_in_a_default_is_refused_naming_the_file(tmp_path, field):
    # expect among them: a family's expectation is always written in its own spec
    err = defaults_error(tmp_path, f"defaults:\n  frozen_parameters: {{why: frozen, {field}}}\n")
    assert err.path.endswith("defaults.yaml") and err.key == "defaults.frozen_parameters"
    assert "unknown key" in str(err) and field.split(":")[0] in str(err)


def test_an_unknown_top_level_key_of_the_defaults_file_is_refused(tmp_path):
    err = defaults_error(tmp_path, "defaults:\n  frozen_parameters: {why: frozen}\nproperties: {}\n")
    assert err.path.endswith("defaults.yaml") and "unknown key" in str(err) and "properties" in str(err)


@pytest.mark.parametrize(("field", "key"), [("why: 3", "why"), ("timeout: fast", "timeout"),
                                            ("timeout: .inf", "timeout"), ("options: [1]", "options"),
                                            ("dtypes: [float8]", "dtypes.0")])
def test_a_default_of_the_wrong_type_is_refused_naming_the_key(tmp_path, field, key):
    err = defaults_error(tmp_path, f"defaults:\n  frozen_parameters: {{{field}}}\n")
    assert err.path.endswith("defaults.yaml") and err.key == f"defaults.frozen_parameters.{key}", str(err)


def test_a_default_for_no_registered_check_is_refused(tmp_path):
    err = defaults_error(tmp_path, "defaults:\n  frozen_paramters: {why: a typo drops this from every spec}\n")
    assert err.key == "defaults.frozen_paramters" and "no registered check" in str(err)


def test_a_default_dtype_without_the_familys_tolerance_names_the_spec_and_the_default(tmp_path):
    defaults = {"forward_equivalence": {"dtypes": ["float16"]}}
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, GOOD), known_checks=CHECKS, defaults=defaults)
    err = info.value
    assert err.path.endswith("toy.yaml") and err.key == "properties.forward_equivalence.dtypes"
    assert "defaults.yaml" in str(err)


def test_a_broken_shipped_defaults_file_is_one_error_and_no_spec_loads(tmp_path, monkeypatch):
    broken = write(tmp_path, "defaults:\n  frozen_parameters: {why: 3}\n", "defaults.yaml")
    monkeypatch.setattr(normbench.spec, "builtin_defaults_path", lambda: broken)
    loaded = load_specs(known_checks=CHECKS)
    assert [(e.path, e.key) for e in loaded.errors] == [(str(broken), "defaults.frozen_parameters.why")]
    assert loaded.specs == {}
    with pytest.raises(SpecError, match="defaults.yaml"):
        load_spec(next(p for p in builtin_spec_paths() if p.name == "layernorm.yaml"), known_checks=CHECKS)
