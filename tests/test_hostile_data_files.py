"""Spec and known-failures files cannot hang or crash a run: a FIFO, a file nested 50 000 deep, a
YAML alias bomb, a non-UTF-8 or an oversized file is one error naming the file, and every other file still loads.

No test here depends on how long anything takes: each asserts the refusal, which happens before the file is read
(FIFO, size), before any structure is built past the depth cap, or before anything is expanded (aliases)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from normbench import safe_yaml
from normbench.known_failures import load_known_failures
from normbench.spec import builtin_spec_paths, load_specs

ROOT = Path(__file__).resolve().parent.parent
#: the shipped known-failures files (moving from suite/ into the package)
BUILTIN_KNOWN = next(p for p in (ROOT / "normbench" / "suite" / "known_failures", ROOT / "suite" / "known_failures")
                     if p.is_dir())
GOOD_KNOWN = "implementation: my.Norm\nknown_failures:\n  - id: layernorm[my.Norm-shift_invariance]\n    reason: r\n"
#: 342 bytes that expand to 9^9 (387 million) strings in every walk of the data
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


def _fifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)


#: name -> (how to make the file, what the error says)
HOSTILE = {
    "fifo": (_fifo, "not a regular file (a FIFO)"),
    "directory": (lambda p: p.mkdir(), "not a regular file (a directory)"),
    "oversized": (lambda p: _sparse(p, safe_yaml.MAX_BYTES + 1), "more than the 1048576 bytes (1 MiB)"),
    "deep": (lambda p: p.write_text("a: " + "[" * 50_000 + "]" * 50_000), "nested more than 32 levels deep"),
    "deep_block": (lambda p: p.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v\n"),
                   "nested more than 32 levels deep"),
    "alias_bomb": (lambda p: p.write_text(ALIAS_BOMB), "alias *a names a list; an alias may name a scalar only"),
    "recursive_alias": (lambda p: p.write_text("a: &a [*a]\n"), "alias *a names a list"),
    "merge_key": (lambda p: p.write_text("base: &b {x: 1}\nother:\n  <<: *b\n"), "alias *b names a mapping"),
    "latin1": (lambda p: p.write_bytes("family: caf\xe9\n".encode("latin-1")),
               "line 1: not UTF-8: byte 0xe9 at offset 11"),
    "utf16": (lambda p: p.write_text("family: x\n", encoding="utf-16"), "not UTF-8: byte 0xff at offset 0"),
    "huge_integer": (lambda p: p.write_text("a: " + "9" * 5000 + "\n"), "cannot be loaded: ValueError"),
    "python_tag": (lambda p: p.write_text("a: !!python/object/apply:os.system ['true']\n"), "tags such as"),
}
if Path("/dev/zero").exists():
    HOSTILE["dev_zero"] = (lambda p: p.symlink_to("/dev/zero"), "not a regular file (a character device)")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_spec_is_one_error_naming_it_and_the_others_load(tmp_path, kind):
    make, says = HOSTILE[kind]
    path = tmp_path / f"{kind}.yaml"
    make(path)
    loaded = load_specs([tmp_path], known_checks=None)
    (error,) = loaded.errors
    assert error.path == str(path) and str(error).startswith(f"{path}: ") and says in str(error), str(error)
    assert len(loaded.specs) == len(builtin_spec_paths())  # every shipped spec still loads


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_known_failures_file_is_one_error_naming_it_and_the_others_apply(tmp_path, kind):
    make, says = HOSTILE[kind]
    path = tmp_path / f"{kind}.yaml"
    make(path)
    (tmp_path / "good.yaml").write_text(GOOD_KNOWN)
    # a directory, or files named explicitly (a directory named explicitly is a directory of files, here empty)
    for sources in ([tmp_path], *([[path, tmp_path / "good.yaml"]] if kind != "directory" else [])):
        loaded = load_known_failures(sources, builtin=BUILTIN_KNOWN)
        (error,) = loaded.errors
        assert error.path == str(path) and str(error).startswith(f"{path}: ") and says in str(error), str(error)
        assert "my.Norm" in {f.implementation for f in loaded.files}
        assert "torch.nn.LayerNorm" in {f.implementation for f in loaded.files}


def test_an_alias_bomb_is_refused_before_anything_is_expanded(monkeypatch):
    # Nothing is constructed (let alone walked): the refusal happens while the file is composed.
    def never(*args: object) -> None:
        raise AssertionError("constructed a node of an alias bomb")

    monkeypatch.setattr(safe_yaml.BoundedSafeLoader, "construct_document", never)
    with pytest.raises(safe_yaml.YamlFileError, match=r"line 2, column 8: alias \*a names a list"):
        safe_yaml.parse(ALIAS_BOMB)


def test_a_scalar_alias_is_data_and_the_depth_cap_leaves_room():
    # The shipped known-failures files share one long reason this way.
    assert safe_yaml.parse("a: &r long reason\nb: [*r, *r]\n") == {"a": "long reason", "b": ["long reason"] * 2}
    nested = "a: " + "[" * (safe_yaml.MAX_DEPTH - 1) + "1" + "]" * (safe_yaml.MAX_DEPTH - 1)
    assert safe_yaml.parse(nested)["a"] is not None
    assert safe_yaml.parse("\ufeffa: 1\n") == {"a": 1}  # a UTF-8 byte-order mark is UTF-8


def test_every_shipped_data_file_fits_the_caps():
    for path in [*builtin_spec_paths(), *sorted(BUILTIN_KNOWN.glob("*.yaml"))]:
        assert path.stat().st_size < safe_yaml.MAX_BYTES // 16, path
        safe_yaml.load_file(path)


def test_a_spec_dir_that_is_not_a_directory_is_an_error_naming_it(tmp_path):
    missing, a_file = tmp_path / "missing", tmp_path / "file.yaml"
    a_file.write_text("x: 1\n")
    loaded = load_specs([missing, a_file], known_checks=None)
    assert [str(e) for e in loaded.errors] == [f"{missing}: --spec-dir: no such directory",
                                               f"{a_file}: --spec-dir: not a directory"]
    assert len(loaded.specs) == len(builtin_spec_paths())
