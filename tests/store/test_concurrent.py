"""Results are never lost: concurrent writers into one results folder keep every record (the folder's lock), and a
writer SIGKILLed mid-write leaves nothing that blocks `normbench leaderboard`, `normbench merge` or the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from normbench.cli.main import main
from normbench.store.scan import record_files
from normbench.store.validate import load_record
from normbench.store.write import store_record

ROUNDS = 20
OUTCOMES = 300  # a record of realistic size, so that two unlocked read-merge-writes would overlap

# One writer: for each round, wait until the other writer is ready too (a file barrier: the sleep is only its poll
# interval, no order depends on it), then store a conformance and a benchmark record of its own implementation into
# that round's results folder.
WRITER = r"""
import sys, time
from pathlib import Path
from normbench.store.records import benchmark_record, conformance_record
from normbench.store.write import store_record

def barrier(folder, name):
    (folder / f"{name}-{impl}").touch()
    while len(list(folder.glob(f"{name}-*"))) < 2:
        time.sleep(0.001)

root, impl, rounds, n, unlocked = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if unlocked == "1":
    # The control: the same writes without the lock must lose records (proves the test can fail). Each store waits
    # after its read-merge until the other writer has read too, so both always write over what they read: the
    # lost update every unlocked overlap makes, on every store, not only when the scheduler interleaves them.
    import contextlib
    import normbench.store.write as write
    write.results_lock = lambda folder, timeout=None: contextlib.nullcontext(Path(folder) / "raw")
    merge_into, stores = write.merge_into, iter(range(10**9))

    def merge_then_wait(results_dir, records):
        merged = merge_into(results_dir, records)
        barrier(Path(results_dir), f"merged{next(stores)}")
        return merged
    write.merge_into = merge_then_wait
for r in range(rounds):
    folder = root / f"round-{r}"
    folder.mkdir(parents=True, exist_ok=True)
    barrier(folder, "ready")
    outcomes = [{"test_id": f"layernorm[{impl}-p{i}-float32]", "family": "layernorm", "implementation": impl,
                 "property": f"p{i}", "verdict": "pass", "source": "test", "summary": "x" * 200} for i in range(n)]
    implementations = {impl: {"family": "layernorm", "source": "test", "planned": n, "judged": n, "unjudged": 0}}
    record = conformance_record(outcomes, "ci", implementations)
    record["machine_id"] = "shared-machine"
    store_record(folder, record)
    case = {"id": f"layernorm[{impl}-4x8-float32-forward]", "implementation": impl, "median_s": 1e-3,
            "q1_s": 1e-3, "q3_s": 1e-3, "measured_utc": record["created_utc"]}
    bench = benchmark_record("cpu", [case], None, threads=1)
    bench["machine_id"] = "shared-machine"
    store_record(folder, bench)
"""


def _run_writers(root: Path, unlocked: bool) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), impl, str(ROUNDS), str(OUTCOMES),
                               "1" if unlocked else "0"], stderr=subprocess.PIPE, text=True)
             for impl in ("impl.a", "impl.b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err


def _lost(root: Path) -> list[str]:
    lost = []
    for r in range(ROUNDS):
        machine = root / f"round-{r}" / "raw" / "shared-machine"
        conformance = load_record(machine / "conformance.json")
        bench = load_record(machine / "benchmark-cpu.json")
        for impl in ("impl.a", "impl.b"):
            mine = [k for k, o in conformance["outcomes"].items() if o["implementation"] == impl]
            if len(mine) != OUTCOMES or impl not in conformance["implementations"]:
                lost.append(f"round {r}: conformance of {impl}")
            if f"layernorm[{impl}-4x8-float32-forward]" not in bench["results"]:
                lost.append(f"round {r}: benchmark of {impl}")
    return lost


def test_twenty_pairs_of_concurrent_writers_lose_no_record(tmp_path):
    _run_writers(tmp_path, unlocked=False)
    assert _lost(tmp_path) == []
    assert not list(tmp_path.rglob(".*.tmp-*"))  # and no temporary is left behind


def test_without_the_lock_the_same_writers_lose_records(tmp_path):
    # the control: it shows that the test above would notice a store without a lock (each round, the writer that
    # renames last overwrites the other's conformance and benchmark records)
    _run_writers(tmp_path, unlocked=True)
    assert len(_lost(tmp_path)) == 2 * ROUNDS


# A writer that is killed while its temporary is half written: it holds the folder's lock at that moment.
KILLED = r"""
import os, sys, time
from pathlib import Path
import normbench.store.files as files
from normbench.store.records import conformance_record
from normbench.store.write import store_record

folder, signal_file = Path(sys.argv[1]), Path(sys.argv[2])
def half_write(fd, text):
    os.write(fd, text[: len(text) // 2].encode())
    signal_file.touch()
    time.sleep(600)
files._write_new_file = half_write
record = conformance_record([{"test_id": "layernorm[impl.k-p-float32]", "implementation": "impl.k",
                              "verdict": "pass"}], "ci")
record["machine_id"] = "m1"
store_record(folder, record)
"""


def _outcome(impl: str, verdict: str = "pass") -> dict:
    return {"test_id": f"layernorm[{impl}-p-float32]", "family": "layernorm", "implementation": impl,
            "property": "p", "check": "p", "mode": "any", "dtype": "float32", "device": "cpu", "expect": "holds",
            "verdict": verdict, "observed": "holds", "summary": "", "metrics": {}}


def test_a_writer_killed_mid_write_blocks_nothing(tmp_path, capsys, monkeypatch):
    from normbench.store.records import conformance_record

    results = tmp_path / "results"
    first = conformance_record([_outcome("impl.first")], "ci")
    first["machine_id"] = "m1"
    store_record(results, first)
    # an older normbench's leftover: named like a record, it used to make leaderboard and merge refuse the folder
    legacy = results / "raw" / "m1" / ".tmp-abc123.json"
    legacy.write_text('{"half a rec')
    signal_file = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(results), str(signal_file)])
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    machine = results / "raw" / "m1"
    killed = [p.name for p in machine.glob(".*tmp-*") if p != legacy]
    # the killed writer's half record: hidden, and named so that no record glob (*/*.json) matches it
    assert len(killed) == 1 and killed[0].startswith(".conformance.json.tmp-") and not killed[0].endswith(".json")
    assert record_files(results) == [machine / "conformance.json"]

    assert main(["leaderboard", "--results-dir", str(results), "--format", "md"]) == 0
    assert "impl.first" in (results / "LEADERBOARD.md").read_text()
    assert main(["merge", str(results), "--into", str(tmp_path / "merged"), "--no-render"]) == 0
    assert "refused" not in capsys.readouterr().err
    assert not list((tmp_path / "merged").rglob(".*tmp-*"))

    # the kernel released the dead writer's lock: the next run stores at once, and clears the temporaries
    monkeypatch.setattr("normbench.store.files.LOCK_TIMEOUT_S", 5.0)
    second = conformance_record([_outcome("impl.second")], "ci")
    second["machine_id"] = "m1"
    store_record(results, second)
    assert not list(machine.glob(".*tmp-*"))
    stored = load_record(machine / "conformance.json")["outcomes"]
    assert {o["implementation"] for o in stored.values()} == {"impl.first", "impl.second"}
