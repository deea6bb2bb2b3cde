"""Records as the store holds them, for the leaderboard, the publishers and the CLI verbs that read a results folder:
one conformance outcome, one benchmark case, and a machine's three records (conformance, benchmarks, claims) of a
small board whose ranking has one answer."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from normbench.store.records import benchmark_record, claims_record, conformance_record

ROOT = Path(__file__).resolve().parents[2]


def on_machine(record: dict[str, Any], machine: str) -> dict[str, Any]:
    """A copy of `record` as measured on `machine` (its id and cpu name)."""
    record = copy.deepcopy(record)
    record["machine_id"] = machine
    record["machine"] = {**record["machine"], "cpu": f"cpu of {machine}"}
    return record


def outcome(impl: str, prop: str, verdict: str, dtype: str = "float32", **metrics: Any) -> dict[str, Any]:
    """One layernorm conformance outcome of `impl` on property `prop` (its check of the same name)."""
    return {"test_id": f"layernorm[{impl}-{prop}-{dtype}]", "family": "layernorm", "implementation": impl,
            "property": prop, "check": prop, "mode": "any", "dtype": dtype, "device": "cpu", "expect": "holds",
            "verdict": verdict, "observed": "holds" if verdict == "pass" else "violated", "summary": "",
            "metrics": metrics, "ulp": "output-scale"}


def case(impl: str, median: float, roofline_pct: float, shape: tuple[int, ...] = (4, 8),
         pass_name: str = "forward") -> dict[str, Any]:
    """One layernorm benchmark case of `impl` against torch.nn.LayerNorm: `median` seconds, `roofline_pct` of it."""
    return {"id": f"layernorm[{impl}-{'x'.join(map(str, shape))}-float32-{pass_name}]", "family": "layernorm",
            "implementation": impl, "shape": list(shape), "dtype": "float32", "pass": pass_name, "device": "cpu",
            "baseline": "torch.nn.LayerNorm", "features": shape[-1], "numel": shape[0] * shape[-1],
            "reduce": "token", "median_s": median, "iqr_s": median / 10, "q1_s": median, "q3_s": median,
            "gbps": roofline_pct / 10, "roofline_pct": roofline_pct, "roofline_gbps": 10.0, "peak_gbps": None,
            "peak_mem_bytes": 2**20, "measured_utc": "2026-01-01T00:00:00"}


def records(machine: str, speed: float = 1.0) -> list[dict[str, Any]]:
    """`machine`'s conformance, benchmark and claims records: torch.nn.LayerNorm and slow.correct conform,
    fast.broken fails, unjudged.fast is only timed; `speed` scales every timing (a faster machine)."""
    conformance = conformance_record([
        outcome("torch.nn.LayerNorm", "forward_equivalence", "pass", **{"output.max_ulp": 2.0, "tol_ratio": 0.1}),
        outcome("fast.broken", "forward_equivalence", "fail", **{"output.max_ulp": 900.0, "tol_ratio": 30.0}),
        outcome("slow.correct", "forward_equivalence", "pass", **{"output.max_ulp": 1.0, "tol_ratio": 0.05}),
    ], profile="ci")
    bench = benchmark_record("cpu", [case("torch.nn.LayerNorm", 2e-3 / speed, 40.0 * speed),
                                     case("fast.broken", 1e-3 / speed, 80.0 * speed),
                                     case("slow.correct", 4e-3 / speed, 20.0 * speed),
                                     case("unjudged.fast", 0.5e-3 / speed, 160.0 * speed)],
                             {"copy_gbps": 10.0, "copy_bytes": 2**28}, threads=2)
    claims = claims_record([{"id": "k", "claim": "X is faster", "source": "paper", "measured": "1.1x",
                             "verdict": "holds here", "measured_utc": "2026-01-01T00:00:00"}])
    return [on_machine(r, machine) for r in (conformance, bench, claims)]


def publish_committed_site(out: Path) -> Path:
    """The site of the project's committed records, published into `out` (the plots copied, not redrawn, to keep
    this quick): what a visitor of the published leaderboard sees."""
    from normbench.board.build import build_leaderboard
    from normbench.publish import publish_all
    from normbench.store.scan import scan_records

    shutil.copytree(ROOT / "results" / "raw", out / "raw")
    shutil.copytree(ROOT / "results" / "plots", out / "plots")
    found, errors = scan_records(out)
    assert not errors, errors
    publish_all(build_leaderboard(found), out, ["badges", "site"])
    return out / "site"
