"""LEADERBOARD.md: every table as a GitHub-flavoured markdown table (tabulate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from normbench.board.model import Leaderboard
from normbench.publish._format import existing_plots, rows_text

#: what a cell may not carry as itself: '|' ends a table cell (a name "x | conforms" shifted every column after it, so
#: a failing implementation read "conforms"), '<' / '&' would be raw HTML, '\\' could escape the next '|', and a line
#: break ends the table row. Numeric character references are resolved only after the row is split into cells.
_MARKDOWN_ESCAPES = str.maketrans({"|": "&#124;", "<": "&lt;", ">": "&gt;", "&": "&amp;", "\\": "&#92;",
                                   "\n": " ", "\r": " "})


def md(text: Any) -> str:
    """`text` as one markdown table cell (or list item) that renders as exactly that text."""
    return str(text).translate(_MARKDOWN_ESCAPES)


def _rows(rows: list[list[Any]]) -> list[list[str]]:
    return [[md(v) for v in row] for row in rows]


class MarkdownPublisher:
    name = "md"
    outputs = ("LEADERBOARD.md",)
    default = True

    def render(self, board: Leaderboard, out_dir: Path) -> str:
        lines = ["# normbench leaderboard", "",
                 "Rendered by `normbench leaderboard` from the records under `results/raw/` alone (the same records "
                 "always give the same page). Raw numbers: `results/csv/`; plots: `results/plots/`.", ""]
        if board.machines:
            lines += ["## Machines", "",
                      tabulate(_rows([[m.label, m.machine_id, m.description] for m in board.machines]),
                               headers=["label", "machine id", "description"], tablefmt="github",
                               disable_numparse=True), ""]
        if board.refused:
            lines += ["## Refused records", "", "These files were not read (never misread):", ""]
            lines += [f"- {md(message)}" for message in board.refused] + [""]
        for table in board.tables:
            lines += [f"## {table.title}", ""]
            lines += [f"{note}" for note in table.notes[:1]] + ([""] if table.notes else [])
            lines.append(tabulate(_rows(rows_text(table)), headers=[md(h) for h in table.headers], tablefmt="github",
                                  disable_numparse=True)
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
