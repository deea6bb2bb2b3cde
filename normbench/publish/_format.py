"""Cell formatting shared by the text publishers (CSV keeps the raw numbers)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from normbench.board.model import Leaderboard, Table

PLOTS_DIR = "plots"


def cell(value: Any) -> str:
    """Numbers to about three significant figures, None to an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100 or magnitude == 0:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def rows_text(table: Table) -> list[list[str]]:
    return [[cell(v) for v in row] for row in table.rows]


def existing_plots(board: Leaderboard, table: Table, out_dir: Path) -> list[str]:
    """Relative paths of the table's plots that the PNG publisher wrote."""
    return [f"{PLOTS_DIR}/{name}.png" for name in table.plots if (out_dir / PLOTS_DIR / f"{name}.png").exists()]
