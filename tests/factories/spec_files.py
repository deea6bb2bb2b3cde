"""Spec files for the spec loader's tests: a minimal valid family (GOOD) to break one key at a time, written into a
folder, and the one SpecError its loading raises."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from normbench.checks import CHECKS
from normbench.spec import SpecError, load_spec

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
    """`text` as the spec file `name` in `tmp_path`."""
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> SpecError:
    """The SpecError loading `path` raises (the test fails when it loads)."""
    with pytest.raises(SpecError) as info:
        load_spec(path, known_checks=CHECKS)
    return info.value
