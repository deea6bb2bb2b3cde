"""The site's per-item views: every stored outcome of a family or an implementation, and the conformance matrix
laid out to fit a page (properties down the side, at most a few implementations across per table)."""

from __future__ import annotations

from typing import Any

from normbench.board.conformance import conformance_rows
from normbench.compare import ULP_DEFINITION
from normbench.publish._format import cell
from normbench.publish.site_model import SiteCell, SiteRow, SiteTable
from normbench.publish.site_text import site_text
from normbench.verdicts import ITEM_WORDS, status_of

DTYPE_ORDER = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
#: implementations across one matrix table: with the property column, eight columns fit 1400 px
MATRIX_COLUMNS = 7
VERDICT_CSS = {"conforms": "verdict-conforms", "known": "verdict-known", "failing": "verdict-failing",
               "unjudged": "verdict-unjudged"}


def _number(value: Any) -> SiteCell:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return SiteCell(cell(value) if numeric else "", repr(float(value)) if numeric else None)


def items_table(outcomes: list[tuple[str, dict[str, Any]]], links: dict[str, str], table_id: str,
                with_implementation: bool = True, with_machine: bool = True) -> SiteTable:
    """One row per stored outcome (machine label, outcome): what was judged, its verdict in normbench.verdicts'
    words ("known failure", not "xfail") and its measured error."""
    headers = ["implementation", "property", "mode", "dtype", "device", "verdict", "error / tolerance", "max ulp",
               "machine", "summary"]
    keep = [h for h in headers if (with_implementation or h != "implementation") and (with_machine or h != "machine")]
    if not any(o.get("ulp") == ULP_DEFINITION for _, o in outcomes):
        keep.remove("max ulp")  # older records measured each element's own ulp: nothing here to show

    def order(pair: tuple[str, dict[str, Any]]) -> tuple[Any, ...]:
        o = pair[1]
        return (o.get("implementation", ""), o.get("property", ""), DTYPE_ORDER.get(o.get("dtype", ""), 9),
                o.get("mode", ""), pair[0])

    rows = []
    for machine, o in sorted(outcomes, key=order):
        metrics = o.get("metrics") or {}
        # only ulp figures measured at the output's scale (an older record's element-wise ulp misleads near zero)
        ulp = metrics.get("max_ulp", metrics.get("output.max_ulp")) if o.get("ulp") == ULP_DEFINITION else None
        verdict = str(o.get("verdict"))
        impl = str(o.get("implementation"))
        by_header = {"implementation": SiteCell(impl, None, "text", links.get(impl)),
                     **{k: SiteCell(str(o.get(k, "")), None, "text") for k in ("property", "mode", "dtype", "device")},
                     "verdict": SiteCell(ITEM_WORDS.get(verdict, verdict), None, f"text sym-{verdict}"),
                     "error / tolerance": _number(metrics.get("tol_ratio")), "max ulp": _number(ulp),
                     "machine": SiteCell(machine, None, "text"),
                     "summary": SiteCell(site_text(str(o.get("summary", ""))), None, "summary")}
        filters = {"dtype": str(o.get("dtype")), "device": str(o.get("device", "cpu")), "variant": str(o.get("mode"))}
        rows.append(SiteRow([by_header[h] for h in keep], filters))
    words = ", ".join(ITEM_WORDS.values())
    notes = ["Every stored outcome; error / tolerance ≤ 1 is within the spec's bound (checks against the float64 "
             "truth); max ulp is the largest error in units in the last place of the output's scale (max|truth|). "
             f"Verdicts: {words}. A known failure is declared with its reason and shown, never hidden; an error "
             "is a crash, a timeout or tampering (no verdict); not judged: planned, but no verdict in that run."]
    text_columns = {i for i, h in enumerate(keep) if h not in ("error / tolerance", "max ulp")}
    return SiteTable(table_id, "Every item", keep, rows, notes, [], text_columns)


def _symbol_css(text: str) -> str:
    """The worst symbol in a matrix cell ("tr:✓V ev:✗H" holds a failure) picks its colour."""
    for marker, css in (("E", "sym-error"), ("✗", "sym-fail"), ("xf", "sym-xfail"), ("∅", "sym-unjudged"),
                        ("?", "sym-unjudged")):
        if marker in text.replace("ev:", "").replace("tr:", ""):
            return css
    if text.strip("- ") == "":
        return "sym-skip"
    return "sym-pass"


def matrix_tables(outcomes: list[dict[str, Any]], links: dict[str, str], table_id: str, title: str,
                  notes: list[str], references: set[str]) -> list[SiteTable]:
    """The conformance matrix of one machine's outcomes, transposed: a row per property, a column per
    implementation (references last, shown apart), split into tables of MATRIX_COLUMNS implementations."""
    headers, rows = conformance_rows(outcomes)
    rows.sort(key=lambda r: (r[1] in references, r[1]))
    properties = headers[3:]
    by_impl = {r[1]: r for r in rows}
    statuses = {}
    for o in outcomes:
        statuses.setdefault(o.get("implementation"), []).append(o)
    names = [r[1] for r in rows]
    tables = []
    for start in range(0, len(names), MATRIX_COLUMNS):
        chunk = names[start:start + MATRIX_COLUMNS]
        verdict_row = SiteRow([SiteCell("verdict", None, "text prop")] + [
            SiteCell(by_impl[n][2], None, f"text {VERDICT_CSS.get(status_of(statuses[n]).key, '')}", links.get(n))
            for n in chunk])
        body = [verdict_row]
        for i, prop in enumerate(properties):
            cells = [SiteCell(prop, None, "text prop")]
            for n in chunk:
                text = str(by_impl[n][3 + i])
                cells.append(SiteCell(text, None, f"text sym {_symbol_css(text)}" if text else "text"))
            body.append(SiteRow(cells))
        part = "" if len(names) <= MATRIX_COLUMNS else f" ({start // MATRIX_COLUMNS + 1} of " \
            f"{-(-len(names) // MATRIX_COLUMNS)})"
        muted = {j + 1 for j, n in enumerate(chunk) if n in references}
        tables.append(SiteTable(table_id if start == 0 else f"{table_id}-{start // MATRIX_COLUMNS + 1}",
                                title + part, ["property", *chunk], body, notes if start == 0 else [], [],
                                set(range(len(chunk) + 1)), muted))
    return tables
