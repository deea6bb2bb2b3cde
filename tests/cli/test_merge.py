"""`normbench merge`: records from several machines into one leaderboard with a column per machine; idempotent;
unknown versions refused before anything is written."""

from __future__ import annotations

import json

from factories.records import records

from normbench.cli.main import main
from normbench.store.records import PYTEST_BENCHMARK_DIR
from normbench.store.write import store_record


def results_of(tmp_path, name, machine, speed=1.0):
    folder = tmp_path / name
    for record in records(machine, speed):
        store_record(folder, record)
    return folder


def test_two_machines_merge_into_one_leaderboard(tmp_path, capsys):
    a, b = results_of(tmp_path, "a", "m1"), results_of(tmp_path, "b", "m2", speed=2.0)
    pb = a / "raw" / "m1" / PYTEST_BENCHMARK_DIR
    pb.mkdir()
    (pb / "cpu.json").write_text(json.dumps({"datetime": "2026-01-01", "benchmarks": []}))
    into = tmp_path / "merged"
    assert main(["merge", str(a), str(b), "--into", str(into)]) == 0
    out = capsys.readouterr().out
    assert "from 2 machine(s)" in out
    board = (into / "LEADERBOARD.md").read_text()
    assert "GB/s [M1]" in board and "GB/s [M2]" in board and "| M2 " in board
    assert (into / "raw" / "m1" / PYTEST_BENCHMARK_DIR / "cpu.json").exists()
    snapshot = {p: p.read_text() for p in (into / "raw").rglob("*.json")}
    assert main(["merge", str(b), str(a), "--into", str(into)]) == 0
    assert "0 entries added, 0 replaced" in capsys.readouterr().out
    assert {p: p.read_text() for p in (into / "raw").rglob("*.json")} == snapshot


def test_unknown_version_refuses_the_whole_merge(tmp_path, capsys):
    a = results_of(tmp_path, "a", "m1")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"api_version": 2, "kind": "benchmark"}))
    into = tmp_path / "merged"
    assert main(["merge", str(a), str(bad), "--into", str(into)]) == 1
    err = capsys.readouterr().err
    assert "api_version 2 is not supported" in err and "nothing was written" in err
    assert not into.exists()


def test_a_single_record_file_merges(tmp_path, capsys):
    a = results_of(tmp_path, "a", "m1")
    into = tmp_path / "merged"
    assert main(["merge", str(a / "raw" / "m1" / "claims.json"), "--into", str(into), "--no-render"]) == 0
    assert (into / "raw" / "m1" / "claims.json").exists() and not (into / "LEADERBOARD.md").exists()
