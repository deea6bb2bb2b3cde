"""The transformers catalogue across the versions the `ecosystem` extra allows (transformers>=5,<6).

`snapshots/transformers-<version>.json` (beside this file) holds the catalogue as normbench classified it under each
version it was tried with (5.0.0, the lowest the extra allows, and 5.25.0, the newest at the time): for every
class its status, family and declaration. A class present in two versions must be classified the same in both:
a release that changes what the adapter finds (a constructor renamed, a copy group regrouped so that its
representative is a class the classifier cannot judge) shows here as a named difference, not as a silently
different leaderboard. Classes new in one version are expected (new models) and not compared.

Regenerate the snapshot of the installed version after a deliberate classifier change with
`python tests/ecosystem/test_hf_versions.py` (then rerun it with the other versions' interpreters, e.g. a venv with
transformers 5.0.0, see README "Ecosystem catalogue").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from normbench.ecosystem import hf

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def snapshot_of(entries: list[Any]) -> dict[str, dict[str, Any]]:
    """Per class: status (a copy counts as judged: grouping differs between versions), family and the
    declaration it is judged under (a copy's is its representative's), without the free-text notes."""
    by_name = {e.name: e for e in entries}
    out: dict[str, dict[str, Any]] = {}
    for e in entries:
        decl = e.declaration or {}
        if e.status == "copy":
            decl = by_name[decl["same as"]].declaration
        row: dict[str, Any] = {"status": "judged" if e.status == "copy" else e.status, "family": e.family,
                               "declaration": {k: v for k, v in decl.items() if k != "note"}}
        if e.status == "not judged":
            row["reason"] = e.reason
        out[e.name] = row
    return out


def environmental(row: dict[str, Any]) -> bool:
    """A class not judged because its modeling file failed to import: a fact of the machine (transformers 5.0.0's
    modeling_gemma3n imports timm, and timm imports torchvision, absent beside the CPU torch), not a
    classification to compare."""
    return row["status"] == "not judged" and row.get("reason", "").startswith("importing ")


def drift(live: dict[str, dict[str, Any]], pinned: dict[str, dict[str, Any]]) -> list[str]:
    """Every class in both whose classification differs, one line each naming the class and both values."""
    out = []
    for name in sorted(set(live) & set(pinned)):
        a, b = live[name], pinned[name]
        if environmental(a) or environmental(b):
            continue
        for key in ("status", "family", "declaration"):
            if a.get(key) != b.get(key):
                out.append(f"{name}: {key} {a.get(key)!r} here, {b.get(key)!r} in the snapshot"
                           + (f" (here: {a['reason']})" if "reason" in a and key == "status" else ""))
    return out


def _live() -> tuple[str, dict[str, dict[str, Any]]]:
    pytest.importorskip("transformers", reason="needs the ecosystem extra: pip install -e '.[ecosystem]'")
    try:
        import transformers.modeling_utils  # noqa: F401
    except Exception as exc:  # e.g. a torchvision built for another torch
        pytest.skip(f"transformers does not import here: {exc}")
    import transformers

    entries = hf.entries()
    if entries and entries[0].status == "unavailable":
        pytest.skip(entries[0].reason)
    return transformers.__version__, snapshot_of(entries)


def _pinned() -> dict[str, dict[str, dict[str, Any]]]:
    return {p.stem.removeprefix("transformers-"): json.loads(p.read_text())
            for p in sorted(SNAPSHOTS.glob("transformers-*.json"))}


def test_snapshots_cover_the_lowest_version_the_extra_allows():
    import tomllib

    extra = tomllib.loads((SNAPSHOTS.parents[2] / "pyproject.toml").read_text())
    [spec] = [s for s in extra["project"]["optional-dependencies"]["ecosystem"] if s.startswith("transformers")]
    assert spec == "transformers>=5,<6", f"the extra now says {spec!r}: snapshot its new lowest version"
    assert "5.0.0" in _pinned() and len(_pinned()) >= 2


def test_a_class_is_classified_alike_in_every_version_tried():
    version, live = _live()
    pinned = _pinned()
    if version in pinned:  # the same version: the whole list, new or vanished classes included
        assert sorted(live) == sorted(pinned[version]), \
            f"classes differ from the {version} snapshot: +{sorted(set(live) - set(pinned[version]))} " \
            f"-{sorted(set(pinned[version]) - set(live))}"
    problems = {v: drift(live, snap) for v, snap in pinned.items()}
    assert not any(problems.values()), f"transformers {version} vs the snapshots: " + json.dumps(problems, indent=1)


def test_the_snapshots_agree_with_each_other():
    pinned = list(_pinned().items())
    for (va, a), (vb, b) in zip(pinned, pinned[1:]):
        assert not drift(a, b), f"{va} vs {vb}: {drift(a, b)}"


def test_drift_names_a_reclassified_class_and_ignores_new_ones():
    llama = {"status": "judged", "family": "rmsnorm", "declaration": {"affine": "always", "bias": False}}
    pinned = {"transformers.LlamaRMSNorm": llama, "transformers.NanoChatRMSNorm": llama}
    # what 5.0.0 gave before the representative fix: the copy group led by Llama4TextL2Norm, unjudged
    unjudged = {"status": "not judged", "family": None, "declaration": {},
                "reason": "no family: Llama4TextL2Norm is not an RMS, Layer, Group or Batch norm"}
    broken = {"transformers.LlamaRMSNorm": llama, "transformers.NanoChatRMSNorm": unjudged,
              "transformers.NewRMSNorm": llama}
    lines = drift(broken, pinned)
    assert [line.split(" ", 2)[:2] for line in lines] == [["transformers.NanoChatRMSNorm:", k]
                                                          for k in ("status", "family", "declaration")]
    assert lines[0].startswith("transformers.NanoChatRMSNorm: status 'not judged' here, 'judged'")
    assert "no family" in lines[0]
    offset = {**llama, "declaration": {**llama["declaration"], "weight_offset": 1.0}}
    [line] = drift({"transformers.LlamaRMSNorm": offset}, pinned)
    assert line.startswith("transformers.LlamaRMSNorm: declaration")
    assert drift({**pinned, "transformers.NewRMSNorm": llama}, pinned) == []
    # an import error of the machine is not a reclassification
    env = {**unjudged, "reason": "importing transformers.models.x raised ModuleNotFoundError: No module named 'y'"}
    assert drift({"transformers.LlamaRMSNorm": env}, pinned) == []


def test_a_copy_group_is_represented_by_a_name_that_gives_a_family():
    same = "h"
    reps = hf._representatives([hf.Candidate("Llama4TextL2Norm", "m.a", same, False),
                                hf.Candidate("NanoChatRMSNorm", "m.b", same, True)])
    assert reps[same].name == "NanoChatRMSNorm"  # though generated and later by name
    reps = hf._representatives([hf.Candidate("AaaL2Norm", "m.a", same, False)])
    assert reps[same].name == "AaaL2Norm"  # alone, it still stands (and is listed with its reason)


if __name__ == "__main__":
    import transformers

    SNAPSHOTS.mkdir(exist_ok=True)
    target = SNAPSHOTS / f"transformers-{transformers.__version__}.json"
    target.write_text(json.dumps(snapshot_of(hf.entries()), indent=1, sort_keys=True) + "\n")
    print(target, file=sys.stderr)
