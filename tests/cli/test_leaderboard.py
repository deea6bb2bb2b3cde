"""`normbench leaderboard`: renders the stored records; refuses unreadable ones with a message and exit 1."""

from __future__ import annotations

from factories.records import records

from normbench.cli.main import main
from normbench.store.write import store_record


def test_renders_every_format(tmp_path, capsys):
    for record in records("m1"):
        store_record(tmp_path, record)
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--show"]) == 0
    out = capsys.readouterr().out
    assert "LEADERBOARD.md" in out and "LEADERBOARD.html" in out and "ranking.csv" in out and ".png" in out
    assert "slow.correct" in out  # --show prints the ranking


def test_refused_records_are_reported(tmp_path, capsys):
    for record in records("m1"):
        store_record(tmp_path, record)
    (tmp_path / "raw" / "m1" / "old.json").write_text('{"api_version": 0}')
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--format", "md"]) == 1
    assert "api_version 0" in capsys.readouterr().err


def test_no_records(tmp_path, capsys):
    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 2
    assert "no records" in capsys.readouterr().err


def test_the_ecosystem_report_and_the_terminal_summary_only_where_named(tmp_path, capsys):
    for record in records("m1"):
        store_record(tmp_path, record)
    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "ECOSYSTEM.md").exists() and "M1 m1: " not in out
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--format", "ecosystem", "--format", "terminal"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'ECOSYSTEM.md'}" in out and "LEADERBOARD.md" not in out
    assert (tmp_path / "ECOSYSTEM.md").read_text().startswith("# Ecosystem leaderboard")
    assert "M1 m1: " in out and "fast.broken" in out  # the terminal summary of the stored outcomes
