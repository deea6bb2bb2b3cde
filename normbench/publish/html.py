"""LEADERBOARD.html: one static page with every table and plot (no scripts, no external assets)."""

from __future__ import annotations

import html
from pathlib import Path

from tabulate import tabulate

from normbench.board.model import Leaderboard
from normbench.publish._format import existing_plots, rows_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
p.note { max-width: 60em; font-size: 0.9em; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


class HtmlPublisher:
    name = "html"
    outputs = ("LEADERBOARD.html",)
    default = True

    def render(self, board: Leaderboard, out_dir: Path) -> str:
        parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>normbench leaderboard</title>",
                 f"<style>{STYLE}</style></head><body>", "<h1>normbench leaderboard</h1>",
                 "<p class='note'>Rendered from the records under <code>results/raw/</code> alone.</p>"]
        if board.machines:
            parts += ["<h2>Machines</h2>",
                      tabulate([[m.label, m.machine_id, m.description] for m in board.machines],
                               headers=["label", "machine id", "description"], tablefmt="html")]
        if board.refused:
            parts += ["<h2>Refused records</h2><ul>",
                      *(f"<li>{html.escape(message)}</li>" for message in board.refused), "</ul>"]
        for table in board.tables:
            parts.append(f"<h2 id='{html.escape(table.name)}'>{html.escape(table.title)}</h2>")
            parts += [f"<p class='note'>{html.escape(note)}</p>" for note in table.notes]
            parts.append(tabulate(rows_text(table), headers=table.headers, tablefmt="html", disable_numparse=True)
                         if table.rows else "<p>(no rows)</p>")
            parts += [f"<img src='{html.escape(path)}' alt='{html.escape(table.title)}'>"
                      for path in existing_plots(board, table, out_dir)]
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        path = out_dir / "LEADERBOARD.html"
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(board, out_dir), encoding="utf-8")
        return [path]
