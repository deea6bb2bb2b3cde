"""results/site/: a static leaderboard site (Jinja2 templates, a few lines of plain JS), from the records alone.

index.html has one card per family, the combined ranking and the badges; family-<name>.html the conformance
matrix, the accuracy table, the performance tables beside their plots, every item and the machines;
impl-<name>.html every failing item with its summary, counterexample and `normbench repro` command. Tables sort
by a header click and filter by dtype, device and variant (mode or pass) in static/site.js: no server, no
network, so the pages work from file:// and from any static host.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from normbench.cli import repro as cli_repro
from normbench.compare import ULP_DEFINITION
from normbench.leaderboard import LEGEND, Leaderboard, Table, conformance_rows
from normbench.publish._format import PLOTS_DIR, cell
from normbench.publish.badges import (
    BADGES_DIR,
    SITE_DIR,
    badge_files,
    implementation_status,
    outcomes_by_implementation,
    slug,
)
from normbench.verdicts import (
    CONFORMS,
    FAILING,
    KNOWN,
    KNOWN_ONLY,
    NOT_CONFORMING,
    NOT_JUDGED,
    group,
    item_words,
)

STATIC_FILES = ("site.js", "site.css")
#: table headers whose values the filter bar selects on (data-<name> on each row), per filter name
FILTER_COLUMNS = {"dtype": ("dtype",), "device": ("device",), "variant": ("mode", "pass")}
DTYPE_ORDER = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
SYMBOL_CSS = {"✓": "sym-pass", "✗": "sym-fail", "E": "sym-error", "x": "sym-xfail", "∅": "sym-unjudged",
              "-": "sym-skip", "R": "sym-pass"}


@dataclass
class SiteCell:
    text: str
    sort: str | None = None
    css: str = ""
    href: str | None = None


@dataclass
class SiteRow:
    cells: list[SiteCell]
    filters: dict[str, str] = field(default_factory=dict)


@dataclass
class SiteTable:
    id: str
    title: str
    headers: list[str]
    rows: list[SiteRow]
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    text_columns: set[int] = field(default_factory=set)


def family_page(family: str) -> str:
    return f"family-{slug(family)}.html"


def implementation_page(name: str) -> str:
    return f"impl-{slug(name)}.html"


def repro_command(test_id: str, results_dir: str = "results") -> str:
    """The command under a failing item: the site is built from the committed results/, which `normbench repro`
    reads only when told (its default is ./normbench-results)."""
    return cli_repro.repro_command(test_id, results_dir)


def _site_cell(value: Any, css: str = "", href: str | None = None) -> SiteCell:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return SiteCell(cell(value), repr(float(value)) if numeric else None, css, href)


def site_table(table: Table, rows: Iterable[list[Any]] | None = None, drop: Iterable[str] = (),
               links: dict[str, str] | None = None, table_id: str | None = None, title: str | None = None,
               plots: list[str] | None = None) -> SiteTable:
    """A leaderboard Table as the site shows it: numbers sort by their value, filter columns tag the rows, the
    implementation column links to its page, and `drop`ped columns (e.g. the family, on a family's page) go."""
    dropped = set(drop)
    keep = [i for i, h in enumerate(table.headers) if h not in dropped]
    headers = [table.headers[i] for i in keep]
    filter_index = {name: next((table.headers.index(h) for h in cols if h in table.headers), None)
                    for name, cols in FILTER_COLUMNS.items()}
    impl_col = table.headers.index("implementation") if "implementation" in table.headers else None
    out_rows = []
    for row in table.rows if rows is None else rows:
        cells = []
        for i in keep:
            href = (links or {}).get(str(row[i])) if i == impl_col else None
            css = "text" if not isinstance(row[i], int | float) or isinstance(row[i], bool) else ""
            if isinstance(row[i], str) and row[i][:1] in SYMBOL_CSS and table.name.startswith("conformance-matrix"):
                css += " " + SYMBOL_CSS[row[i][:1]]
            cells.append(_site_cell(row[i], css.strip(), href))
        filters = {name: str(row[i]) for name, i in filter_index.items() if i is not None and row[i] is not None}
        out_rows.append(SiteRow(cells, filters))
    text_columns = {j for j, i in enumerate(keep) if any(isinstance(r[i], str) for r in (rows or table.rows))}
    return SiteTable(table_id or table.name, title or table.title, headers, out_rows, list(table.notes),
                     plots or [], text_columns)


def _items_table(outcomes: list[tuple[str, dict[str, Any]]], links: dict[str, str], table_id: str,
                 with_implementation: bool = True) -> SiteTable:
    """One row per stored outcome: what was judged, its verdict and its measured error."""
    headers = ["implementation", "property", "mode", "dtype", "device", "verdict", "error / tolerance", "max ulp",
               "machine", "summary"]
    if not with_implementation:
        headers = headers[1:]
    rows = []
    def order(pair: tuple[str, dict[str, Any]]) -> tuple[Any, ...]:
        o = pair[1]
        return (o.get("implementation", ""), o.get("property", ""), DTYPE_ORDER.get(o.get("dtype", ""), 9),
                o.get("mode", ""), pair[0])

    for machine, o in sorted(outcomes, key=order):
        metrics = o.get("metrics") or {}
        # only ulp figures measured at the output's scale (an older record's element-wise ulp misleads near zero)
        ulp = metrics.get("max_ulp", metrics.get("output.max_ulp")) if o.get("ulp") == ULP_DEFINITION else None
        verdict = str(o.get("verdict"))
        cells = [SiteCell(str(o.get("implementation")), None, "text", links.get(str(o.get("implementation"))))]
        cells += [SiteCell(str(o.get(k, "")), None, "text") for k in ("property", "mode", "dtype", "device")]
        cells.append(SiteCell(verdict, None, f"text sym-{verdict}"))
        ratio = metrics.get("tol_ratio")
        cells += [_site_cell(ratio if isinstance(ratio, int | float) else None),
                  _site_cell(ulp if isinstance(ulp, int | float) else None), SiteCell(machine, None, "text"),
                  SiteCell(str(o.get("summary", "")), None, "summary")]
        if not with_implementation:
            cells = cells[1:]
        filters = {"dtype": str(o.get("dtype")), "device": str(o.get("device", "cpu")), "variant": str(o.get("mode"))}
        rows.append(SiteRow(cells, filters))
    notes = ["Every stored outcome; error / tolerance ≤ 1 is within the spec's bound (checks against the float64 "
             "truth); max ulp is the largest error in units in the last place of the output's scale (max|truth|). "
             "Verdicts: pass, fail, error (no verdict: crash, timeout, tampering), xfail (a declared known "
             "failure), report (measured only), skip, unjudged (planned, not judged in that run)."]
    text_columns = {i for i, h in enumerate(headers) if h not in ("error / tolerance", "max ulp")}
    return SiteTable(table_id, "Every item", headers, rows, notes, [], text_columns)


def _filter_options(tables: Iterable[SiteTable]) -> dict[str, list[str]]:
    values: dict[str, set[str]] = defaultdict(set)
    for t in tables:
        for r in t.rows:
            for k, v in r.filters.items():
                values[k].add(v)
    order = {"dtype": lambda v: (DTYPE_ORDER.get(v, 9), v)}
    return {name: sorted(values[name], key=order.get(name, lambda v: (0, v))) for name in FILTER_COLUMNS
            if values.get(name)}


def _rows_of(table: Table, column: str, value: str) -> list[list[Any]]:
    i = table.headers.index(column)
    return [r for r in table.rows if r[i] == value]


class SitePublisher:
    name = "site"

    def __init__(self) -> None:
        self.env = Environment(loader=PackageLoader("normbench.publish", "templates"),
                               autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        site = Path(out_dir) / SITE_DIR
        site.mkdir(parents=True, exist_ok=True)
        # pages of families or implementations no longer recorded must not linger beside the new ones
        for stale in [*site.glob("family-*.html"), *site.glob("impl-*.html")]:
            stale.unlink()
        static = site / "static"
        static.mkdir(exist_ok=True)
        written = []
        templates = Path(__file__).parent / "templates" / "static"
        for name in STATIC_FILES:
            shutil.copyfile(templates / name, static / name)
            written.append(static / name)
        for file_name, html in self.render(board, Path(out_dir)).items():
            path = site / file_name
            path.write_text(html, encoding="utf-8")
            written.append(path)
        return written

    # -- the pages ------------------------------------------------------------------------------------------

    def render(self, board: Leaderboard, out_dir: Path) -> dict[str, str]:
        """File name (relative to site/) -> HTML of every page."""
        by_impl = outcomes_by_implementation(board)
        labels = {m.machine_id: m.label for m in board.machines}
        families: dict[str, set[str]] = defaultdict(set)
        for name, outcomes in by_impl.items():
            families[outcomes[0]["family"]].add(name)
        performance = {t.name.removeprefix("performance-"): t for t in board.tables
                       if t.name.startswith("performance-") and t.name != "performance-roofline"}
        for family, t in performance.items():
            families[family].update(str(r[0]) for r in t.rows)
        impl_family = {impl: family for family, impls in families.items() for impl in impls}
        links = {impl: implementation_page(impl) for impl in impl_family}
        badges = badge_files(board)
        badge_src = {name: [f"{BADGES_DIR}/{f}" for f, _ in entries] for name, entries in badges.items()}
        benchmarked = {str(r[0]) for t in performance.values() for r in t.rows}
        machines = self._machines_table(board)

        pages: dict[str, str] = {}
        cards = []
        for family in sorted(families):
            impls = []
            for impl in sorted(families[family]):
                status = implementation_status(by_impl.get(impl, []))
                impls.append({"name": impl, "href": links[impl], "status": status.key, "verdict": status.text})
            cards.append({"name": family, "href": family_page(family), "implementations": impls,
                          "conforming": sum(i["status"] == CONFORMS for i in impls),
                          "known": sum(i["status"] == KNOWN_ONLY for i in impls),
                          "failing": sum(i["status"] == NOT_CONFORMING for i in impls),
                          "unjudged": sum(i["status"] == NOT_JUDGED for i in impls),
                          "benchmarked": len(families[family] & benchmarked)})
            pages[family_page(family)] = self._family_page(board, family, by_impl, performance.get(family), links,
                                                           labels, out_dir, machines)
        for impl, family in sorted(impl_family.items()):
            pages[implementation_page(impl)] = self._implementation_page(
                board, impl, family, by_impl.get(impl, []), performance.get(family), links, labels,
                badge_src.get(impl, []))
        ranking = None
        if any(t.name == "ranking" for t in board.tables):
            ranking = site_table(board.table("ranking"), links=links)
        pages["index.html"] = self.env.get_template("index.html.j2").render(
            title="leaderboard", families=cards, ranking=ranking, machines=machines, refused=board.refused,
            badges=[{"name": n, "href": links.get(n, "index.html"), "images": badge_src[n]} for n in sorted(badges)])
        return pages

    def _machines_table(self, board: Leaderboard) -> SiteTable | None:
        if not board.machines:
            return None
        rows = [SiteRow([SiteCell(m.label, None, "text"), SiteCell(m.machine_id, None, "text"),
                         SiteCell(m.description, None, "text")]) for m in board.machines]
        return SiteTable("machines", "Machines", ["label", "machine id", "description"], rows, [], [], {0, 1, 2})

    def _family_page(self, board: Leaderboard, family: str, by_impl: dict[str, list[dict[str, Any]]],
                     perf: Table | None, links: dict[str, str], labels: dict[str, str], out_dir: Path,
                     machines: SiteTable | None) -> str:
        matrices = []
        for m in board.machines:
            outcomes = [o for o in board.outcomes.get(m.machine_id, []) if o.get("family") == family]
            if not outcomes:
                continue
            headers, rows = conformance_rows(outcomes)
            matrix = Table(f"conformance-matrix-{m.label}", f"Conformance matrix on {m.label}", headers, rows,
                           [f"{m.machine_id}: {m.description}", LEGEND])
            matrices.append(site_table(matrix, drop=["family"], links=links))
        accuracy = None
        if any(t.name == "accuracy" for t in board.tables):
            rows = _rows_of(board.table("accuracy"), "family", family)
            if rows:
                accuracy = site_table(board.table("accuracy"), rows, drop=["family"], links=links)
        performance = []
        if perf is not None and perf.rows:
            plots = [f"../{PLOTS_DIR}/{name}.png" for name in perf.plots
                     if (out_dir / PLOTS_DIR / f"{name}.png").exists()]
            performance.append(site_table(perf, links=links, plots=plots))
        outcomes = [(labels[mid], o) for mid, os_ in board.outcomes.items() for o in os_ if o.get("family") == family]
        items = _items_table(outcomes, links, "items") if outcomes else None
        tables = [t for t in (*matrices, accuracy, *performance, items) if t is not None]
        return self.env.get_template("family.html.j2").render(
            title=f"family {family}", matrices=matrices, accuracy=accuracy, performance=performance, items=items,
            machines=machines, filter_options=_filter_options(tables))

    def _implementation_page(self, board: Leaderboard, impl: str, family: str, outcomes: list[dict[str, Any]],
                             perf: Table | None, links: dict[str, str], labels: dict[str, str],
                             badges: list[str]) -> str:
        status = implementation_status(outcomes)
        machine_of = {id(o): labels[mid] for mid, os_ in board.outcomes.items() for o in os_}
        failing, known, unjudged = [], [], []
        for o in sorted(outcomes, key=lambda o: (o.get("property", ""), DTYPE_ORDER.get(o.get("dtype", ""), 9),
                                                 o.get("mode", ""))):
            verdict = o.get("verdict")
            entry = {"test_id": o.get("test_id", ""), "anchor": "item-" + slug(str(o.get("test_id", ""))),
                     "verdict": verdict, "verdict_word": item_words(o),
                     "machine": machine_of.get(id(o), ""), "property": o.get("property"),
                     "expect": o.get("expect", ""), "summary": o.get("summary", ""),
                     "known_failure": o.get("known_failure"),
                     "tol_ratio": cell((o.get("metrics") or {}).get("tol_ratio")),
                     "counterexample": json.dumps(o["counterexample"], sort_keys=True)
                     if o.get("counterexample") else "",
                     # offered wherever `normbench repro` writes a script: every measured failure, no error
                     "repro": repro_command(str(o.get("test_id", ""))) if cli_repro.offers_repro(o) else ""}
            if verdict in FAILING:
                failing.append(entry)
            elif verdict in KNOWN:
                known.append(entry)
            elif group(verdict) == "unjudged":
                unjudged.append(entry)
        accuracy = None
        if any(t.name == "accuracy" for t in board.tables):
            rows = _rows_of(board.table("accuracy"), "implementation", impl)
            if rows:
                accuracy = site_table(board.table("accuracy"), rows, drop=["family", "implementation"])
        performance = []
        if perf is not None:
            rows = _rows_of(perf, "implementation", impl)
            if rows:
                performance.append(site_table(perf, rows, drop=["implementation"]))
        pairs = [(machine_of.get(id(o), ""), o) for o in outcomes]
        items = _items_table(pairs, links, "items", with_implementation=False) if outcomes else None
        tables = [t for t in (accuracy, *performance, items) if t is not None]
        return self.env.get_template("implementation.html.j2").render(
            title=impl, family=family, family_href=family_page(family), source=board.sources.get(impl),
            status=status.key, verdict=status.text, counts=status.counts.describe(), badges=badges, failing=failing,
            known=known, unjudged=unjudged,
            accuracy=accuracy, performance=performance, items=items, filter_options=_filter_options(tables))
