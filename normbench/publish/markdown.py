"""LEADERBOARD.md: every table as a GitHub-flavoured markdown table (tabulate)."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from normbench.leaderboard import Leaderboard
from normbench.publish._format import existing_plots, rows_text


class MarkdownPublisher:
    name = "md"

    def render(self, board: Leaderboard, out_dir: Path) -> str:
        lines = ["# normbench leaderboard", "",
                 "Rendered by `normbench leaderboard` from the records under `results/raw/` alone (the same records "
                 "always give the same page). Raw numbers: `results/csv/`; plots: `results/plots/`.", ""]
        if board.machines:
            lines += ["## Machines", "",
                      tabulate([[m.label, m.machine_id, m.description] for m in board.machines],
                               headers=["label", "machine id", "description"], tablefmt="github"), ""]
        if board.refused:
            lines += ["## Refused records", "", "These files were not read (never misread):", ""]
            lines += [f"- {message}" for message in board.refused] + [""]
        for table in board.tables:
            lines += [f"## {table.title}", ""]
            lines += [f"{note}" for note in table.notes[:1]] + ([""] if table.notes else [])
            lines.append(tabulate(rows_text(table), headers=table.headers, tablefmt="github", disable_numparse=True)
                         if table.rows else "(no rows)")
            lines.append("")
            lines += [f"{note}\n" for note in table.notes[1:]]
            for path in existing_plots(board, table, out_dir):
                lines += [f"![{table.title}]({path})", ""]
        return "\n".join(lines)

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        path = out_dir / "LEADERBOARD.md"
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(board, out_dir), encoding="utf-8")
        return [path]
