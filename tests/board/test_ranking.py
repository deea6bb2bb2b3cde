"""The ranking: per family, references shown as the truth, and a non-conforming or
unbenchmarked implementation never above a conforming, benchmarked one."""

from __future__ import annotations

from factories.records import case, outcome

from normbench.board.build import build_leaderboard
from normbench.board.ranking import is_reference
from normbench.store.records import benchmark_record, conformance_record


def _in_family(entry: dict, family: str) -> dict:
    """An outcome ("test_id") or benchmark case ("id") moved to another family."""
    key = "test_id" if "test_id" in entry else "id"
    return {**entry, "family": family, key: entry[key].replace("layernorm[", f"{family}[")}


def board_rows() -> list[list]:
    outcomes = [
        outcome("reference.layernorm", "forward_equivalence", "pass", tol_ratio=0.0),
        outcome("torch.nn.LayerNorm", "forward_equivalence", "pass", tol_ratio=0.1),
        # correct but never benchmarked: may not outrank a conforming, benchmarked one however accurate
        outcome("accurate.unbenchmarked", "forward_equivalence", "pass", tol_ratio=0.01),
        # the case: non-conforming, unbenchmarked, with a small "worst error" from one false alarm
        outcome("thirdparty.broken", "forward_equivalence", "fail", tol_ratio=0.02),
        _in_family(outcome("torch.nn.RMSNorm", "forward_equivalence", "pass", tol_ratio=0.2), "rmsnorm"),
        _in_family(outcome("reference.rmsnorm", "forward_equivalence", "pass", tol_ratio=0.0), "rmsnorm"),
    ]
    bench = benchmark_record("cpu", [case("torch.nn.LayerNorm", 2e-3, 40.0),
                                     case("reference.layernorm", 8e-3, 500.0),  # fastest, but it is the truth
                                     _in_family(case("torch.nn.RMSNorm", 1e-3, 90.0), "rmsnorm")],
                             {"copy_gbps": 10.0, "copy_bytes": 2**28}, threads=2)
    return build_leaderboard([conformance_record(outcomes, profile="ci"), bench]).table("ranking").rows


def test_ranks_restart_per_family_and_references_are_the_truth():
    rows = board_rows()
    by_family: dict[str, list[tuple]] = {}
    for row in rows:
        by_family.setdefault(row[2], []).append((row[0], row[1], row[3]))
    assert [r[:2] for r in by_family["layernorm"]] == [
        ("truth", "reference.layernorm"), (1, "torch.nn.LayerNorm"), (2, "accurate.unbenchmarked"),
        (3, "thirdparty.broken")]
    assert [r[:2] for r in by_family["rmsnorm"]] == [("truth", "reference.rmsnorm"), (1, "torch.nn.RMSNorm")]
    status = {r[1]: r[2] for rs in by_family.values() for r in rs}
    assert status["reference.layernorm"].startswith("reference")
    assert status["accurate.unbenchmarked"] == "conforms, not benchmarked"
    assert status["thirdparty.broken"] == "does not conform (1 failing)"


def test_a_non_conforming_module_is_never_first_even_alone_with_references():
    # Only third-party results plus the reference: rank 1 must not be a reference, and a lone broken module is
    # ranked (last and only) with its status saying it does not conform.
    rows = build_leaderboard([conformance_record([
        outcome("reference.layernorm", "forward_equivalence", "pass", tol_ratio=0.0),
        outcome("thirdparty.broken", "forward_equivalence", "fail", tol_ratio=0.02),
        outcome("thirdparty.ok", "forward_equivalence", "pass", tol_ratio=0.9),
    ], profile="ci")]).table("ranking").rows
    assert [(r[0], r[1]) for r in rows] == [("truth", "reference.layernorm"), (1, "thirdparty.ok"),
                                            (2, "thirdparty.broken")]


def test_reference_detection():
    assert is_reference("reference.rmsnorm") and not is_reference("torch.nn.RMSNorm")
    assert is_reference("mylib.Truth", [{"tags": ["reference"]}])
