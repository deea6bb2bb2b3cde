"""results/plots/<family>-<device>-<machine>.png: GB/s against hidden size per implementation and variant (eager,
compile, onnxruntime: one marker each), the median with its inter-quartile range as error bars (the stored
``gbps_q1`` / ``gbps_q3``), a timing that cannot be trusted drawn hollow, the roofline drawn, each machine named by
what it is, and one legend below the panels, where it covers no line; results/plots/claim-<id>-<machine>.png: the
claims lab's figures (curves the claim recorded, drawn as they are, each legend below its panel).

matplotlib is imported only when there is something to plot, so a conformance-only render stays fast.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normbench import deploy
from normbench.board.model import ClaimPlot, Leaderboard, Machine, PlotSpec
from normbench.deploy import COMPILE, EAGER, EXPORT
from normbench.publish._format import PLOTS_DIR
from normbench.publish.bench_entries import bench_entries, gbps_spread, untrusted_reason
from normbench.publish.machine_labels import machine_labels

LINESTYLES = {"float32": "-", "bfloat16": "--", "float16": ":", "float64": "-."}
MARKERS = {EAGER.name: "o", COMPILE.name: "s", EXPORT.name: "^"}
#: longest implementation label drawn in a legend (a 5000-character name would run far past the figure)
MAX_LABEL = 80
#: (pass, implementation, dtype, variant, x, GB/s) of one drawn point, as a plot's series hold it
PointKey = tuple[str, str, str, str, float, float]


def plain(label: str) -> str:
    """`label` as matplotlib draws it literally: '$' starts mathtext (a name "a$\\frac$" raised in savefig and stopped
    the publisher), a label starting with '_' is silently left out of the legend, and a long one is cut (its hash
    kept, so two long names stay apart)."""
    if len(label) > MAX_LABEL:
        label = f"{label[:MAX_LABEL - 14]}…{hashlib.sha256(label.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    label = label.replace("$", r"\$")
    return " " + label if label.startswith("_") else label


@dataclass(frozen=True)
class PointStats:
    """What a point's stored entry says beyond its median: the GB/s spread and whether the timing is trusted."""

    q1: float | None
    q3: float | None
    untrusted: str | None


def point_stats(spec: PlotSpec, machine_id: str, entries: list[dict[str, Any]]) -> dict[PointKey, PointStats]:
    """The stored entries behind a plot's points. A point is found by what its series names and its (x, GB/s), x
    being what normbench.board.plots plots: the hidden size where every entry reduces per token, else the
    element count."""
    family_device = spec.name.removesuffix(f"-{machine_id}")
    mine = [e for e in entries if e.get("family") != "roofline" and f"{e['family']}-{e['device']}" == family_device]
    token = all(e.get("reduce") == "token" for e in mine)
    out = {}
    for e in mine:
        x = e["features"] if token else e["numel"] * 1.0
        spread = gbps_spread(e)
        out[(str(e["pass"]), str(e["implementation"]), str(e["dtype"]), deploy.record_name(e), float(x),
             float(e["gbps"]))] = PointStats(*(spread or (None, None)), untrusted_reason(e))
    return out


def _machine_of(spec: PlotSpec, machines: list[Machine]) -> Machine | None:
    return next((m for m in machines if spec.name.endswith(f"-{m.machine_id}")), None)


def plot_title(spec: PlotSpec, machine: Machine | None, labels: dict[str, str]) -> str:
    """"layernorm on cpu · AMD EPYC · 2 cores · torch 2.13.0+cpu": the machine by what it is, not "M1 <id>"."""
    if machine is None:
        return spec.title
    return spec.title.replace(f"{machine.label} {machine.machine_id}", labels[machine.machine_id])


class PlotPublisher:
    name = "png"
    outputs = ("plots/*.png",)
    default = True

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        if not board.plots and not board.claim_plots:
            return []
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        folder = out_dir / PLOTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        entries = bench_entries(board, out_dir)
        labels = machine_labels(board.machines)
        written = []
        for spec in board.plots:
            machine = _machine_of(spec, board.machines)
            stats = point_stats(spec, machine.machine_id, entries.get(machine.machine_id, [])) if machine else {}
            written.append(self.draw(spec, folder / f"{spec.name}.png", stats, plot_title(spec, machine, labels)))
        return written + [self.draw_claim(spec, folder / f"{spec.name}.png") for spec in board.claim_plots]

    def draw_claim(self, spec: ClaimPlot, path: Path) -> Path:
        import matplotlib.pyplot as plt

        n = max(len(spec.panels), 1)
        fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.0), squeeze=False)
        for ax, (panel, curves) in zip(axes.flat, spec.panels.items()):
            for name, points in curves.items():
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o" if len(points) <= 30 else None, markersize=3, label=plain(name))
            if spec.log_y:
                ax.set_yscale("log")
            ax.set_title(panel, fontsize=9)
            ax.set_xlabel(spec.x_label)
            ax.set_ylabel(spec.y_label)
            ax.grid(alpha=0.3)
            # below the panel, outside the axes: a legend inside covers the curves it names
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        fig.suptitle("\n".join(textwrap.wrap(spec.title, width=int(70 * n))), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        return path

    def draw(self, spec: PlotSpec, path: Path, stats: dict[PointKey, PointStats] | None = None,
             title: str | None = None) -> Path:
        import matplotlib.pyplot as plt

        fig = self.figure(spec, stats, title)
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        return path

    def figure(self, spec: PlotSpec, stats: dict[PointKey, PointStats] | None = None,
               title: str | None = None) -> Any:
        """The matplotlib figure of a performance plot (the caller saves and closes it)."""
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        stats = stats or {}
        n = max(len(spec.panels), 1)
        cols = min(n, 2)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(7.2 * cols, 4.4 * rows), squeeze=False)
        implementations = sorted({s.implementation for series in spec.panels.values() for s in series})
        colors = {impl: plt.get_cmap("tab10")(i % 10) for i, impl in enumerate(implementations)}
        legend: dict[str, Any] = {}  # label -> handle, the same series in every panel named once
        untrusted_drawn = False
        for ax, (pass_name, series) in zip(axes.flat, spec.panels.items()):
            for s in series:
                xs, ys = zip(*s.points)
                found = [stats.get((pass_name, s.implementation, s.dtype, s.variant, float(x), float(y)))
                         for x, y in s.points]
                low = [y - f.q1 if f and f.q1 is not None else 0.0 for y, f in zip(ys, found)]
                high = [f.q3 - y if f and f.q3 is not None else 0.0 for y, f in zip(ys, found)]
                drawn = ax.errorbar(xs, ys, yerr=[[max(v, 0.0) for v in low], [max(v, 0.0) for v in high]],
                                    marker=MARKERS.get(s.variant, "o"), markersize=4, capsize=3, elinewidth=1,
                                    color=colors[s.implementation], linestyle=LINESTYLES.get(s.dtype, "-"))
                legend.setdefault(plain(s.label), drawn)
                bad = [(x, y) for (x, y), f in zip(s.points, found) if f and f.untrusted]
                if bad:  # a timing that cannot be trusted is drawn hollow, ringed in red
                    bx, by = zip(*bad)
                    ax.plot(bx, by, linestyle="none", marker="o", markersize=10, markerfacecolor="none",
                            markeredgecolor="red", markeredgewidth=1.5)
                    untrusted_drawn = True
            if spec.roofline_gbps:
                legend.setdefault("copy roofline", ax.axhline(spec.roofline_gbps, color="black", linewidth=1.2))
            if spec.peak_gbps:
                legend.setdefault("nominal peak", ax.axhline(spec.peak_gbps, color="grey", linestyle=":"))
            xs_all = sorted({x for s in series for x, _ in s.points})
            if len(xs_all) > 1 and xs_all[-1] / xs_all[0] >= 4:
                ax.set_xscale("log", base=2)
            ax.set_title(pass_name)
            ax.set_xlabel(spec.x_label)
            ax.set_ylabel("GB/s (median, IQR bars)")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(spec.panels):]:
            ax.set_visible(False)
        names = {"copy roofline": f"copy roofline {spec.roofline_gbps:.0f} GB/s" if spec.roofline_gbps else "",
                 "nominal peak": f"nominal peak {spec.peak_gbps:.0f} GB/s" if spec.peak_gbps else ""}
        handles, texts = list(legend.values()), [names.get(k) or k for k in legend]
        if untrusted_drawn:
            handles.append(Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                                  markeredgecolor="red"))
            texts.append("untrusted timing (not ranked)")
        fig.suptitle(title or spec.title, fontsize=11)
        fig.tight_layout()
        # one legend for every panel, below them all: inside an axes it hid the lines it named
        fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(3, max(len(texts), 1)),
                   fontsize=8, frameon=False)
        return fig
