"""results/site/: a static leaderboard site (Jinja2 templates, a few lines of plain JS), from the records alone.

A visitor should know in ten seconds what was measured, on which machine and when, and per family who conforms
and who is fastest. So:

- index.html says what was measured (families, implementations, items, benchmark figures), each machine by what it
  is (CPU or GPU, cores, torch) and when; a card per lead family (LayerNorm, RMSNorm, BatchNorm, GroupNorm) with
  who conforms, who conforms with known failures, who does not, who is fastest by trusted figures, and the
  references apart (normbench's float64 truth, never counted as conforming); then a line per other family;
- family-<name>.html the same answer, the family's ranking, its performance as shape × implementation pivots (GB/s,
  tritonbench's perf_report layout) beside plots with IQR error bars, accuracy, the conformance matrix (properties
  down the side), every item, the machines;
- impl-<name>.html every failing item with its summary, counterexample and `normbench repro` command;
- ranking.html the combined ranking, badges.html every badge.

Every table fits a 1400 px page; free text loses local paths and citations of files users do not have
(normbench.publish.site_text). Tables sort by a header click and filter by dtype, device and variant (mode or
pass) in static/site.js: no server, no network, so the pages work from file:// and from any static host.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from normbench.board.conformance import LEGEND
from normbench.board.model import Leaderboard, Machine, Table
from normbench.board.ranking import is_reference
from normbench.cli import repro as cli_repro
from normbench.publish._format import PLOTS_DIR, cell
from normbench.publish.badges import (
    BADGES_DIR,
    SITE_DIR,
    badge_files,
    implementation_status,
    outcomes_by_implementation,
    slug,
)
from normbench.publish.bench_entries import bench_entries, index_entries
from normbench.publish.machine_labels import last_record, machine_labels, relabel
from normbench.publish.site_items import items_table, matrix_tables
from normbench.publish.site_model import SiteCell, SiteRow, SiteTable
from normbench.publish.site_perf import UNTRUSTED_PREFIX, figures, pivots, speeds
from normbench.publish.site_summary import LEAD_FAMILIES, FamilySummary, family_order, summarize
from normbench.publish.site_text import site_text
from normbench.verdicts import (
    FAILING,
    KNOWN,
    Counts,
    group,
    item_words,
    plural,
)

STATIC_FILES = ("site.js", "site.css")
#: table headers whose values the filter bar selects on (data-<name> on each row), per filter name
FILTER_COLUMNS = {"dtype": ("dtype",), "device": ("device",), "variant": ("mode", "pass")}
DTYPE_ORDER = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
RANKING_PAGE, BADGES_PAGE = "ranking.html", "badges.html"


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
    if isinstance(value, str) and value.startswith(UNTRUSTED_PREFIX):
        # a figure whose timing cannot be trusted (normbench.bench.trust): a mark, its reason on hover
        return SiteCell("", None, "untrusted", badge="untrusted", badge_title=site_text(value[len(UNTRUSTED_PREFIX):]))
    text = cell(value)
    return SiteCell(text if numeric else site_text(text), repr(float(value)) if numeric else None, css, href)


def site_table(table: Table, rows: Iterable[list[Any]] | None = None, drop: Iterable[str] = (),
               links: dict[str, str] | None = None, table_id: str | None = None, title: str | None = None,
               plots: list[str] | None = None, columns: Iterable[int] | None = None,
               drop_empty: bool = False) -> SiteTable:
    """A leaderboard Table as the site shows it: numbers sort by their value, filter columns tag the rows, the
    implementation column links to its page, and `drop`ped columns (e.g. the family, on a family's page) go;
    `columns`, where given, keeps those column indices only (one machine's of a merged table); `drop_empty` leaves
    out the columns no row has a value in (ulp columns of older records, × eager of an eager-only table)."""
    dropped = set(drop)
    wanted = set(range(len(table.headers))) if columns is None else set(columns)
    if drop_empty:
        wanted = {i for i in wanted if any(r[i] is not None for r in (table.rows if rows is None else rows))}
    keep = [i for i, h in enumerate(table.headers) if h not in dropped and i in wanted]
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
            cells.append(_site_cell(row[i], css, href))
        filters = {name: str(row[i]) for name, i in filter_index.items() if i is not None and row[i] is not None}
        out_rows.append(SiteRow(cells, filters))
    text_columns = {j for j, i in enumerate(keep) if any(isinstance(r[i], str) for r in (rows or table.rows))}
    return SiteTable(table_id or table.name, title or table.title, headers, out_rows,
                     [site_text(n) for n in table.notes], plots or [], text_columns)


def per_machine_columns(table: Table, machines: list[Machine]) -> list[tuple[Machine, list[int]]]:
    """A merged table's columns per machine: the shared ones (no "[M2]" suffix) and that machine's own, so a table
    with a column set per machine is shown as one table per machine, each fitting the page."""
    if len(machines) <= 1:
        return [(m, list(range(len(table.headers)))) for m in machines[:1]]
    suffixes = {f" [{m.label}]" for m in machines}
    shared = [i for i, h in enumerate(table.headers) if not any(h.endswith(x) for x in suffixes)]
    return [(m, shared + [i for i, h in enumerate(table.headers) if h.endswith(f" [{m.label}]")]) for m in machines]


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


def breakable(text: str) -> Markup:
    """A header that may wrap after each dot ("torch.nn.LayerNorm" at "torch.|nn.|LayerNorm"), escaped: a narrow
    column breaks a dotted name where it reads, not mid-word."""
    return Markup("<wbr>").join(escape(part) for part in re.split(r"(?<=\.)", text))


def _day(utc: str | None) -> str | None:
    return str(utc)[:10] if utc else None


class SitePublisher:
    name = "site"
    outputs = ("site/*.html", "site/static/site.js", "site/static/site.css")
    default = True

    def __init__(self) -> None:
        self.env = Environment(loader=PackageLoader("normbench.publish", "templates"),
                               autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        # free text from the records, said without local paths or files users do not have
        self.env.filters["site_text"] = site_text
        self.env.filters["plural"] = plural
        self.env.filters["breakable"] = breakable

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
        labels = machine_labels(board.machines)
        families: dict[str, set[str]] = defaultdict(set)
        for name, outcomes in by_impl.items():
            families[outcomes[0]["family"]].add(name)
        performance = {t.name.removeprefix("performance-"): t for t in board.tables
                       if t.name.startswith("performance-") and t.name != "performance-roofline"}
        for family, t in performance.items():
            families[family].update(str(r[0]) for r in t.rows)
        impl_family = {impl: family for family, impls in families.items() for impl in impls}
        links = {impl: implementation_page(impl) for impl in impl_family}
        references = {impl for impl in impl_family if is_reference(impl, by_impl.get(impl, []))}
        badges = badge_files(board)
        badge_src = {name: [f"{BADGES_DIR}/{f}" for f, _ in entries] for name, entries in badges.items()}
        machines = self._machines_table(board, labels)
        entries = index_entries(bench_entries(board, out_dir))
        figs = {family: figures(t, board.machines, entries) for family, t in performance.items()}

        pages: dict[str, str] = {}
        summaries = []
        for family in family_order(list(families)):
            speed = speeds(figs.get(family, []))
            summary = summarize(family, family_page(family), families[family], by_impl, links, speed)
            summary.untrusted = sum(1 for f in figs.get(family, []) if f.untrusted and f.implementation not in
                                    references)
            summaries.append(summary)
            pages[family_page(family)] = self._family_page(board, summary, by_impl, performance.get(family),
                                                           figs.get(family, []), links, labels, out_dir, machines,
                                                           references)
        for impl, family in sorted(impl_family.items()):
            pages[implementation_page(impl)] = self._implementation_page(
                board, impl, family, by_impl.get(impl, []), performance.get(family), links, labels,
                badge_src.get(impl, []))
        ranking = None
        if any(t.name == "ranking" for t in board.tables):
            ranking = self._relabelled(site_table(board.table("ranking"), links=links), board, labels)
        pages[RANKING_PAGE] = self.env.get_template("ranking.html.j2").render(title="ranking", ranking=ranking)
        pages[BADGES_PAGE] = self.env.get_template("badges.html.j2").render(
            title="badges",
            badges=[{"name": n, "href": links.get(n, "index.html"), "images": badge_src[n]} for n in sorted(badges)])
        pages["index.html"] = self.env.get_template("index.html.j2").render(
            title="overview", lead=[s for s in summaries if s.lead], others=[s for s in summaries if not s.lead],
            lead_names=list(LEAD_FAMILIES.values()), measured=self._measured(board, by_impl, references, figs),
            runs=self._runs(board, labels, entries), machines=machines, refused=[site_text(r) for r in board.refused])
        return pages

    def _measured(self, board: Leaderboard, by_impl: dict[str, list[dict[str, Any]]], references: set[str],
                  figs: dict[str, list[Any]]) -> dict[str, Any]:
        """What the records hold, counted as a visitor reads it: contenders, not the references."""
        contenders = {i for i in by_impl if i not in references} | \
            {f.implementation for fs in figs.values() for f in fs if f.implementation not in references}
        families = {o["family"] for os_ in by_impl.values() for o in os_} | set(figs)
        counts = sum((Counts.of(os_) for os_ in by_impl.values()), Counts())
        timed = [f for fs in figs.values() for f in fs]
        return {"families": plural(len(families), "family", "families"),
                "implementations": plural(len(contenders), "implementation"),
                "references": plural(len(references), "reference implementation"),
                "item_counts": counts.describe() if counts.planned else "",
                "figures": plural(len(timed), "benchmark figure") if timed else "",
                "untrusted": sum(1 for f in timed if f.untrusted)}

    def _runs(self, board: Leaderboard, labels: dict[str, str], entries: dict[Any, dict[str, Any]]
              ) -> list[dict[str, Any]]:
        """Per machine: what it is, when its conformance was judged and its benchmarks measured."""
        runs = []
        for m in board.machines:
            judged = [str(o["recorded_utc"]) for o in board.outcomes.get(m.machine_id, []) if o.get("recorded_utc")]
            measured = [str(e["measured_utc"]) for k, e in entries.items() if k[0] == m.machine_id
                        and e.get("measured_utc")]
            profiles = sorted({n.split("hypothesis profile ", 1)[1] for t in board.tables
                               if t.name == f"conformance-matrix-{m.label}" for n in t.notes
                               if "hypothesis profile " in n})
            runs.append({"label": labels[m.machine_id], "machine_id": m.machine_id,
                         "judged": _day(max(judged, default=None)), "measured": _day(max(measured, default=None)),
                         "last": last_record(m), "profiles": ", ".join(profiles)})
        return runs

    @staticmethod
    def _relabelled(table: SiteTable, board: Leaderboard, labels: dict[str, str]) -> SiteTable:
        """Headers and title name each machine by what it is, not by its column token."""
        table.headers = [relabel(h, board.machines, labels) for h in table.headers]
        table.title = relabel(table.title, board.machines, labels)
        return table

    def _machines_table(self, board: Leaderboard, labels: dict[str, str]) -> SiteTable | None:
        if not board.machines:
            return None
        rows = [SiteRow([SiteCell(labels[m.machine_id], None, "text"), SiteCell(m.machine_id, None, "text"),
                         SiteCell(site_text(m.description), None, "text")]) for m in board.machines]
        return SiteTable("machines", "Machines", ["machine", "machine id", "recorded as"], rows, [], [], {0, 1, 2})

    def _family_page(self, board: Leaderboard, summary: FamilySummary, by_impl: dict[str, list[dict[str, Any]]],
                     perf: Table | None, figs: list[Any], links: dict[str, str], labels: dict[str, str],
                     out_dir: Path, machines: SiteTable | None, references: set[str]) -> str:
        family = summary.name
        several = len(board.machines) > 1
        ranking = None
        if any(t.name == "ranking" for t in board.tables):
            rows = _rows_of(board.table("ranking"), "family", family)
            if rows:
                ranking = self._relabelled(site_table(board.table("ranking"), rows, drop=["family"], links=links,
                                                      table_id="ranking", title="Ranking"), board, labels)
        matrices = []
        for m in board.machines:
            outcomes = [o for o in board.outcomes.get(m.machine_id, []) if o.get("family") == family]
            if outcomes:
                matrices += matrix_tables(outcomes, links, f"conformance-matrix-{m.label}",
                                          f"Conformance matrix on {labels[m.machine_id]}", [LEGEND], references)
        accuracy = None
        if any(t.name == "accuracy" for t in board.tables):
            rows = _rows_of(board.table("accuracy"), "family", family)
            if rows:
                accuracy = self._relabelled(site_table(board.table("accuracy"), rows, drop=["family"], links=links,
                                                       drop_empty=True), board, labels)
        performance, plots, perf_notes = [], [], []
        if perf is not None and perf.rows:
            for m in board.machines:
                performance += pivots(family, figs, m, labels[m.machine_id], several, references)
            plots = [f"../{PLOTS_DIR}/{name}.png" for name in perf.plots
                     if (out_dir / PLOTS_DIR / f"{name}.png").exists()]
            perf_notes = [site_text(n) for n in perf.notes]
        outcomes = [(labels[mid], o) for mid, os_ in board.outcomes.items() for o in os_ if o.get("family") == family]
        items = items_table(outcomes, links, "items", with_machine=several) if outcomes else None
        tables = [t for t in (ranking, *matrices, accuracy, *performance, items) if t is not None]
        return self.env.get_template("family.html.j2").render(
            title=f"family {summary.title}", summary=summary, ranking=ranking, matrices=matrices, accuracy=accuracy,
            performance=performance, plots=plots, perf_notes=perf_notes, items=items,
            counts=Counts.of(o for _, o in outcomes).describe() if outcomes else "", machines=machines,
            filter_options=_filter_options(tables))

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
                accuracy = self._relabelled(site_table(board.table("accuracy"), rows, drop_empty=True,
                                                       drop=["family", "implementation"]), board, labels)
        performance = []
        if perf is not None:
            rows = _rows_of(perf, "implementation", impl)
            if rows:
                # one table per machine: a merged table's column set per machine would not fit the page
                for m, columns in per_machine_columns(perf, board.machines):
                    t = site_table(perf, rows, drop=["implementation"], columns=columns, drop_empty=True,
                                   table_id=f"{perf.name}-{slug(m.machine_id)}",
                                   title=f"Performance on {labels[m.machine_id]}")
                    t.headers = [h.removesuffix(f" [{m.label}]") for h in t.headers]
                    performance.append(t)
        several = len(board.machines) > 1
        pairs = [(machine_of.get(id(o), ""), o) for o in outcomes]
        items = items_table(pairs, links, "items", with_implementation=False, with_machine=several) \
            if outcomes else None
        tables = [t for t in (accuracy, *performance, items) if t is not None]
        return self.env.get_template("implementation.html.j2").render(
            title=impl, family=family, family_href=family_page(family), source=board.sources.get(impl),
            status=status.key, verdict=status.text, counts=status.counts.describe(), badges=badges, failing=failing,
            known=known, unjudged=unjudged, reference=is_reference(impl, outcomes),
            accuracy=accuracy, performance=performance, items=items, filter_options=_filter_options(tables))
