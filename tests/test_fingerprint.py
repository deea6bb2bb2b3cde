"""The judge's fingerprint (normbench.judge_guard.Fingerprint) is a snapshot: what it maps a name to is what was bound
there when it was taken, however late it is read, and the quick comparison of two snapshots (the very same objects in
every namespace) never hides a change the full comparison sees."""

from __future__ import annotations

import sys

import torch

import normbench.compare
from normbench.checks import base
from normbench.judge_guard import fingerprint, what_changed


def _method_of_a_normbench_class() -> tuple[type, str]:
    for value in vars(base).values():
        if isinstance(value, type) and value.__module__ == base.__name__:
            for name, attr in vars(value).items():
                if callable(attr) and getattr(attr, "__code__", None) is not None:
                    return value, name
    raise AssertionError("normbench.checks.base defines no class with a method")


def test_an_untouched_process_changes_nothing() -> None:
    before = fingerprint()
    assert what_changed(before, fingerprint()) == []
    assert before.same_as(fingerprint())
    assert "torch.nn.functional.layer_norm" in before and len(before) > 1000


def test_a_snapshot_read_late_holds_what_was_bound_when_taken() -> None:
    original = torch.nn.functional.layer_norm
    taken = fingerprint()  # not read yet: its names are built on first access
    torch.nn.functional.layer_norm = lambda *a, **k: original(*a, **k)
    try:
        assert taken["torch.nn.functional.layer_norm"] is original
    finally:
        torch.nn.functional.layer_norm = original


def test_each_kind_of_change_is_seen_after_clean_comparisons() -> None:
    before = fingerprint()
    assert what_changed(before, fingerprint()) == []  # a clean full comparison: kept as equal to `before`
    torch._normbench_test_attribute = 1  # type: ignore[attr-defined]  # a name added: not a change
    try:
        assert what_changed(before, fingerprint()) == []
    finally:
        del torch._normbench_test_attribute  # type: ignore[attr-defined]
    cls, method = _method_of_a_normbench_class()
    code = vars(cls)[method].__code__
    compare_code = normbench.compare.compare.__code__
    original = torch.nn.functional.layer_norm
    tamperings = {
        "torch.nn.functional.layer_norm was replaced":
            (lambda: setattr(torch.nn.functional, "layer_norm", lambda *a, **k: original(*a, **k)),
             lambda: setattr(torch.nn.functional, "layer_norm", original)),
        "normbench.compare.compare had its code swapped":
            (lambda: setattr(normbench.compare.compare, "__code__", compare_code.replace()),
             lambda: setattr(normbench.compare.compare, "__code__", compare_code)),
        f"{base.__name__}.{cls.__qualname__}.{method} had its code swapped":
            (lambda: setattr(vars(cls)[method], "__code__", code.replace()),
             lambda: setattr(vars(cls)[method], "__code__", code)),
        "torch state: grad mode is False":
            (lambda: torch.set_grad_enabled(False), lambda: torch.set_grad_enabled(True)),
        "torch.Tensor.mean was replaced":
            (lambda: setattr(torch.Tensor, "mean", lambda self, *a, **k: 0), lambda: delattr(torch.Tensor, "mean")),
        "normbench.compare.math was deleted":
            (lambda: sys.modules.__setitem__("normbench.compare", type(sys)("normbench.compare")),
             lambda: sys.modules.__setitem__("normbench.compare", normbench.compare)),
    }
    for expected, (tamper, restore) in tamperings.items():
        tamper()
        try:
            found = what_changed(before, fingerprint())
        finally:
            restore()
        assert any(f.startswith(expected) for f in found), (expected, found)
        assert what_changed(before, fingerprint()) == [], expected
