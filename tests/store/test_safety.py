"""The store fails early and loses nothing: a bad results folder is refused before judging, a record that could not
be stored goes to a fallback file, files keep the umask, a new run of an implementation replaces all its outcomes,
`normbench merge` is all or nothing, and the store imports nothing of the publishers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normbench.cli.main import main
from normbench.store.errors import ResultsError
from normbench.store.files import write_fallback
from normbench.store.merge import merge_records
from normbench.store.records import API_VERSION, conformance_record
from normbench.store.scan import validate_results_dir
from normbench.store.validate import load_record
from normbench.store.write import store_conformance, store_record


def outcome(impl: str, prop: str, verdict: str = "pass") -> dict:
    return {"test_id": f"layernorm[{impl}-{prop}-float32]", "family": "layernorm", "implementation": impl,
            "property": prop, "check": prop, "mode": "any", "dtype": "float32", "device": "cpu",
            "expect": "holds", "verdict": verdict, "observed": "holds", "summary": "", "metrics": {},
            "source": f"entry point {impl}"}


def counts(planned: int, judged: int, family: str = "layernorm") -> dict:
    return {"family": family, "source": "entry point", "planned": planned, "judged": judged,
            "unjudged": planned - judged}


def run_of(outcomes: list[dict], judged: dict[str, dict] | None = None, when: str | None = None) -> dict:
    record = conformance_record(outcomes, "ci", judged)
    record["machine_id"] = "m1"
    if when:  # a run at a given time: its outcomes and implementations carry it
        record["created_utc"] = when
        for entry in [*record["outcomes"].values(), *record.get("implementations", {}).values()]:
            entry["recorded_utc"] = when
    return record


# -- per-implementation replacement -------------------------------------------------------------------------------

def test_a_new_run_of_an_implementation_replaces_all_its_outcomes(tmp_path):
    yesterday = run_of([outcome("fast.kernel", "shift"), outcome("fast.kernel", "scale"),
                        outcome("torch.nn.LayerNorm", "shift")],
                       {"fast.kernel": counts(2, 2), "torch.nn.LayerNorm": counts(1, 1)}, "2026-01-01T00:00:00")
    store_conformance(tmp_path, yesterday)
    # today the kernel crashes after its first item: one error, one item never judged
    today = run_of([outcome("fast.kernel", "shift", "error")], {"fast.kernel": counts(2, 1)}, "2026-01-02T00:00:00")
    path, stats = store_record(tmp_path, today)
    stored = load_record(path)
    verdicts = {k: o["verdict"] for k, o in stored["outcomes"].items()}
    # yesterday's pass of `scale` is not today's verdict: dropped, not kept as a stale pass
    assert verdicts == {"layernorm[fast.kernel-shift-float32]": "error",
                        "layernorm[torch.nn.LayerNorm-shift-float32]": "pass"}
    assert (stats.replaced, stats.removed) == (1, 1)
    assert stored["implementations"]["fast.kernel"]["unjudged"] == 1
    assert stored["implementations"]["torch.nn.LayerNorm"]["judged"] == 1  # other implementations are kept


def test_an_implementation_with_nothing_judged_drops_every_old_outcome(tmp_path):
    store_conformance(tmp_path, run_of([outcome("k", "shift"), outcome("k", "scale")], {"k": counts(2, 2)},
                                       "2026-01-01T00:00:00"))
    path = store_conformance(tmp_path, run_of([], {"k": counts(2, 0)}, "2026-01-02T00:00:00"))
    stored = load_record(path)
    assert stored["outcomes"] == {} and stored["implementations"]["k"]["judged"] == 0


def test_outcomes_alone_name_their_implementation_too():
    # a record without `implementations` (an older normbench) still replaces per implementation
    old = run_of([outcome("k", "shift"), outcome("k", "scale")], when="2026-01-01T00:00:00")
    new = run_of([outcome("k", "shift", "fail")], when="2026-01-02T00:00:00")
    merged, _ = merge_records(old, new)
    assert {o["property"]: o["verdict"] for o in merged["outcomes"].values()} == {"shift": "fail"}
    assert "implementations" not in merged


def test_per_implementation_merging_stays_idempotent_and_order_independent():
    old = run_of([outcome("k", "shift"), outcome("k", "scale"), outcome("j", "shift")],
                 {"k": counts(2, 2), "j": counts(1, 1)}, "2026-01-01T00:00:00")
    new = run_of([outcome("k", "shift", "fail")], {"k": counts(2, 1)}, "2026-01-02T00:00:00")
    ab, _ = merge_records(old, new)
    ba, stats = merge_records(new, old)
    assert json.dumps(ab, sort_keys=True) == json.dumps(ba, sort_keys=True)
    # merged later, the older run of k resurrects nothing (its 2 outcomes are ignored); j is new to that side
    assert (stats.added, stats.replaced, stats.unchanged, stats.removed) == (1, 0, 2, 0)
    again, stats = merge_records(ab, new)
    assert again == ab and (stats.added, stats.replaced, stats.removed) == (0, 0, 0)
    assert set(ab["outcomes"]) == {"layernorm[k-shift-float32]", "layernorm[j-shift-float32]"}


@pytest.mark.parametrize(("entry", "message"), [
    ({**counts(1, 1), "planned": True}, r"\['planned'\] must be a count"),
    ({**counts(1, 1), "judged": -1}, r"\['judged'\] must be a count"),
    ({**counts(1, 1), "source": None}, r"\['source'\] must be a string"),
    ("conforms", r"implementations\['k'\] must be an object"),
])
def test_malformed_implementations_are_refused(tmp_path, entry, message):
    record = run_of([outcome("k", "shift")])
    record["implementations"] = {"k": entry if not isinstance(entry, dict) else {**entry, "recorded_utc": "t"}}
    with pytest.raises(ResultsError, match=message):
        store_record(tmp_path, record)
    assert not (tmp_path / "raw" / "m1").exists()


@pytest.mark.parametrize("machine", ["../escape", ".hidden", "a/b", ""])
def test_a_machine_id_that_is_no_plain_name_is_refused(tmp_path, machine):
    record = run_of([outcome("k", "shift")])
    record["machine_id"] = machine
    with pytest.raises(ResultsError, match="not a plain name"):
        store_record(tmp_path / "results", record)
    assert not (tmp_path / "escape").exists()


# -- the results folder, checked before judging -------------------------------------------------------------------

def test_a_good_results_folder_passes_and_is_created(tmp_path):
    store_conformance(tmp_path / "results", run_of([outcome("k", "shift")]))
    validate_results_dir(tmp_path / "results")
    validate_results_dir(tmp_path / "fresh")
    assert (tmp_path / "fresh" / "raw").is_dir() and not list((tmp_path / "fresh").rglob(".*tmp-*"))


def test_a_folder_that_cannot_be_created_is_refused(tmp_path):
    # (the tests run as root, for whom permission bits do not stop a write: a path under a file cannot be created)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ResultsError, match=r"a-file/results: cannot write results here .*writable --results-dir"):
        validate_results_dir(blocker / "results")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not a readable normbench record"),
    (json.dumps({"api_version": API_VERSION + 1, "kind": "conformance"}), f"api_version {API_VERSION + 1} is not"),
])
def test_an_unreadable_or_future_record_is_refused_with_the_fix(tmp_path, content, message):
    store_conformance(tmp_path, run_of([outcome("k", "shift")]))
    bad = tmp_path / "raw" / "m2" / "conformance.json"
    bad.parent.mkdir()
    bad.write_text(content)
    with pytest.raises(ResultsError) as info:
        validate_results_dir(tmp_path)
    text = str(info.value)
    assert message in text and str(bad) in text and f"mv {bad} {bad}.bad" in text and "normbench merge" in text
    assert len(info.value.problems) == 1
    bad.rename(bad.with_name("conformance.json.bad"))  # the fix the message gives works
    validate_results_dir(tmp_path)


def test_storing_into_a_folder_with_an_unreadable_record_names_it(tmp_path):
    path = store_conformance(tmp_path, run_of([outcome("k", "shift")]))
    path.write_text("{broken")
    with pytest.raises(ResultsError, match=f"{path}: not a readable normbench record.*move it away"):
        store_conformance(tmp_path, run_of([outcome("k", "scale")]))
    assert path.read_text() == "{broken"


def test_a_record_that_cannot_be_stored_goes_to_a_fallback_file(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    record = run_of([outcome("k", "shift", "fail")], {"k": counts(1, 1)})
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ResultsError):
        store_conformance(blocker / "results", record)
    path = write_fallback(record)
    assert path.parent == tmp_path and path.name.startswith("normbench-conformance-2") and path.suffix == ".json"
    assert load_record(path) == record
    assert write_fallback(record) != path  # a fresh file each time: nothing is overwritten
    # and `normbench merge` stores it once the folder is fixed
    assert main(["merge", str(path), "--into", str(tmp_path / "results"), "--no-render"]) == 0
    assert load_record(tmp_path / "results" / "raw" / "m1" / "conformance.json")["outcomes"] == record["outcomes"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_written_with_the_umask(tmp_path, monkeypatch, umask, mode):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    old = os.umask(umask)
    try:
        path = store_conformance(tmp_path / "results", run_of([outcome("k", "shift")]))
        fallback = write_fallback(run_of([outcome("k", "shift")]))
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777, fallback.stat().st_mode & 0o777) == (mode, mode)


def test_the_store_imports_nothing_of_the_publishers():
    code = ("import sys, normbench.store.scan, normbench.store.write; "
            "print(sorted(m for m in sys.modules if m.startswith(('normbench.board', 'normbench.publish'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- normbench merge: all or nothing ------------------------------------------------------------------------------

def _folder(tmp_path: Path, name: str, machine: str, impl: str) -> Path:
    record = run_of([outcome(impl, "shift")], {impl: counts(1, 1)})
    record["machine_id"] = machine
    store_conformance(tmp_path / name, record)
    return tmp_path / name


def test_merge_writes_nothing_when_the_target_holds_an_unreadable_record(tmp_path, capsys):
    a, b = _folder(tmp_path, "a", "m1", "k"), _folder(tmp_path, "b", "m2", "j")
    into = _folder(tmp_path, "into", "m1", "old")
    broken = into / "raw" / "m1" / "conformance.json"
    broken.write_text("{broken")
    assert main(["merge", str(b), str(a), "--into", str(into)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}: not a readable normbench record" in err and "nothing was written" in err
    # m2 would have merged cleanly, but nothing is written when anything is refused
    assert not (into / "raw" / "m2").exists() and broken.read_text() == "{broken"
    assert not (into / "LEADERBOARD.md").exists()


def test_merge_lists_every_refused_input(tmp_path, capsys):
    a = _folder(tmp_path, "a", "m1", "k")
    bad_version = tmp_path / "v.json"
    bad_version.write_text(json.dumps({"api_version": 99, "kind": "benchmark"}))
    bad_bench = a / "raw" / "m1" / "pytest-benchmark" / "cpu.json"
    bad_bench.parent.mkdir()
    bad_bench.write_text("[]")
    into = tmp_path / "into"
    assert main(["merge", str(a), str(bad_version), str(tmp_path / "missing"), "--into", str(into)]) == 1
    err = capsys.readouterr().err
    assert "api_version 99" in err and "missing: no such file" in err and f"{bad_bench}: not readable" in err
    assert not into.exists()
