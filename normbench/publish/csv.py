"""results/csv/<table>.csv: every table with its raw numbers (no rounding), one file per table."""

from __future__ import annotations

import csv
from pathlib import Path

from normbench.board.model import Leaderboard

CSV_DIR = "csv"


class CsvPublisher:
    name = "csv"
    outputs = ("csv/*.csv",)
    default = True

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        folder = out_dir / CSV_DIR
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        tables = [("machines", ["label", "machine id", "description"],
                   [[m.label, m.machine_id, m.description] for m in board.machines])]
        tables += [(t.name, t.headers, t.rows) for t in board.tables]
        for name, headers, rows in tables:
            path = folder / f"{name}.csv"
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(headers)
                writer.writerows([["" if v is None else v for v in row] for row in rows])
            written.append(path)
        return written
