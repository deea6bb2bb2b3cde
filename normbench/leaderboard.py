"""Leaderboards: a pure function of the stored records (results/raw), rendered with tabulate."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tabulate import tabulate

LEGEND = ("✓ expectation met (H: property holds, V: property violated, as the spec requires) · "
          "✗ expectation NOT met · E error · R reported only · xf known failure · - skipped")


def _symbol(outcome: dict[str, Any]) -> str:
    verdict = outcome.get("verdict")
    observed = {"holds": "H", "violated": "V"}.get(outcome.get("observed") or "", "")
    return {"pass": f"✓{observed}", "fail": f"✗{observed}", "error": "E", "skip": "-",
            "report": f"R{observed}", "xfail": "xf"}.get(str(verdict), "?")


def _worst(symbols: list[str]) -> str:
    for marker in ("E", "✗", "xf", "?"):
        for s in symbols:
            if s.startswith(marker):
                return s
    return symbols[0] if symbols else ""


def _cell(outcomes: list[dict[str, Any]]) -> str:
    """One cell: the worst symbol per mode (train/eval shown separately where they differ)."""
    by_mode: dict[str, list[str]] = defaultdict(list)
    for o in outcomes:
        by_mode[o.get("mode", "any")].append(_symbol(o))
    if len(by_mode) == 1:
        return _worst(next(iter(by_mode.values())))
    return " ".join(f"{mode[:2]}:{_worst(s)}" for mode, s in sorted(by_mode.items(), key=lambda kv: kv[0] != "train"))


def conformance_rows(outcomes: Iterable[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    properties: list[str] = []
    for o in outcomes:
        if "implementation" not in o:
            continue
        grouped[(o["family"], o["implementation"])][o["property"]].append(o)
        if o["property"] not in properties:
            properties.append(o["property"])
    properties.sort()
    headers = ["family", "implementation", "verdict", *properties]
    rows = []
    for (family, impl), props in sorted(grouped.items()):
        flat = [o for os_ in props.values() for o in os_]
        failed = sum(o.get("verdict") in ("fail", "error") for o in flat)
        verdict = "conforms" if not failed else f"{failed} failing"
        rows.append([family, impl, verdict, *(_cell(props[p]) if p in props else "" for p in properties)])
    return headers, rows


def conformance_matrix_text(outcomes: Iterable[dict[str, Any]]) -> str:
    headers, rows = conformance_rows(outcomes)
    # The terminal is narrow: transpose so properties run down the side.
    if not rows:
        return "no outcomes"
    table = [[h, *(r[i] for r in rows)] for i, h in enumerate(headers) if i != 1]
    impl_headers = ["property", *(r[1] for r in rows)]
    return tabulate(table[1:], headers=impl_headers, tablefmt="simple") + "\n" + LEGEND


def render_markdown(records: list[dict[str, Any]]) -> str:
    lines = ["# normbench leaderboard", "",
             "Rendered by `normbench leaderboard` from the records under `results/raw/`.", ""]
    for record in records:
        machine = record.get("machine", {})
        lines += [f"## Conformance on {record.get('machine_id')}", "",
                  f"{machine.get('cpu')} · {machine.get('cores')} cores · torch {machine.get('torch')} · "
                  f"normbench {record.get('normbench', {}).get('commit')} · {record.get('created_utc')} · "
                  f"profile {record.get('profile')}", ""]
        headers, rows = conformance_rows(record.get("outcomes", {}).values())
        lines.append(tabulate(rows, headers=headers, tablefmt="github"))
        lines += ["", LEGEND, ""]
    return "\n".join(lines)


def write_leaderboard(results_dir: Path) -> Path:
    from normbench.results import load_records

    records = load_records(results_dir, "conformance")
    path = Path(results_dir) / "LEADERBOARD.md"
    path.write_text(render_markdown(records), encoding="utf-8")
    return path
