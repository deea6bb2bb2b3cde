"""results/plots/<family>-<device>-<machine>.png: GB/s against hidden size per implementation and variant (eager,
compile, onnxruntime: one marker each), roofline drawn; results/plots/claim-<id>-<machine>.png: the claims lab's
figures (curves the claim recorded, drawn as they are).

matplotlib is imported only when there is something to plot, so a conformance-only render stays fast.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from pathlib import Path

from normbench.leaderboard import ClaimPlot, Leaderboard, PlotSpec
from normbench.publish._format import PLOTS_DIR

LINESTYLES = {"float32": "-", "bfloat16": "--", "float16": ":", "float64": "-."}
MARKERS = {"eager": "o", "compile": "s", "onnxruntime": "^"}
#: longest implementation label drawn in a legend (a 5000-character name would run far past the figure)
MAX_LABEL = 80


def plain(label: str) -> str:
    """`label` as matplotlib draws it literally: '$' starts mathtext (a name "a$\\frac$" raised in savefig and stopped
    the publisher), a label starting with '_' is silently left out of the legend, and a long one is cut (its hash
    kept, so two long names stay apart)."""
    if len(label) > MAX_LABEL:
        label = f"{label[:MAX_LABEL - 14]}…{hashlib.sha256(label.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    label = label.replace("$", r"\$")
    return " " + label if label.startswith("_") else label


class PlotPublisher:
    name = "png"

    def publish(self, board: Leaderboard, out_dir: Path) -> list[Path]:
        if not board.plots and not board.claim_plots:
            return []
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        folder = out_dir / PLOTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return [self.draw(spec, folder / f"{spec.name}.png") for spec in board.plots] + \
            [self.draw_claim(spec, folder / f"{spec.name}.png") for spec in board.claim_plots]

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
            ax.legend(fontsize=7)
        fig.suptitle("\n".join(textwrap.wrap(spec.title, width=int(70 * n))), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    def draw(self, spec: PlotSpec, path: Path) -> Path:
        import matplotlib.pyplot as plt

        n = max(len(spec.panels), 1)
        cols = min(n, 2)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
        implementations = sorted({s.implementation for series in spec.panels.values() for s in series})
        colors = {impl: plt.get_cmap("tab10")(i % 10) for i, impl in enumerate(implementations)}
        for ax, (pass_name, series) in zip(axes.flat, spec.panels.items()):
            for s in series:
                xs, ys = zip(*s.points)
                ax.plot(xs, ys, marker=MARKERS.get(s.variant, "o"), color=colors[s.implementation],
                        linestyle=LINESTYLES.get(s.dtype, "-"), label=plain(s.label))
            if spec.roofline_gbps:
                ax.axhline(spec.roofline_gbps, color="black", linewidth=1.2,
                           label=f"copy roofline {spec.roofline_gbps:.0f} GB/s")
            if spec.peak_gbps:
                ax.axhline(spec.peak_gbps, color="grey", linestyle=":", label=f"nominal peak {spec.peak_gbps:.0f} GB/s")
            xs_all = sorted({x for s in series for x, _ in s.points})
            if len(xs_all) > 1 and xs_all[-1] / xs_all[0] >= 4:
                ax.set_xscale("log", base=2)
            ax.set_title(pass_name)
            ax.set_xlabel(spec.x_label)
            ax.set_ylabel("GB/s")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(spec.panels):]:
            ax.set_visible(False)
        fig.suptitle(spec.title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path
