"""The benchmark plots: GB/s against size per implementation, one panel per pass, one plot per family, device
and machine."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from normbench import deploy
from normbench.board.model import Machine, PlotSpec, Series, plot_name
from normbench.board.performance import PASS_ORDER, VARIANT_ORDER


def plots_of(machines: list[Machine], bench: dict[str, list[dict[str, Any]]]) -> list[PlotSpec]:
    plots = []
    for m in machines:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for e in bench.get(m.machine_id, []):
            if e["family"] != "roofline":
                groups[(e["family"], e["device"])].append(e)
        for (family, device), entries in sorted(groups.items()):
            token = all(e.get("reduce") == "token" for e in entries)
            panels: dict[str, list[Series]] = {}
            for pass_name in sorted({e["pass"] for e in entries}, key=lambda p: PASS_ORDER.get(p, 9)):
                lines: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
                for e in entries:
                    if e["pass"] == pass_name:
                        x = e["features"] if token else e["numel"] * 1.0
                        lines[(e["implementation"], e["dtype"], deploy.record_name(e))].append((x, e["gbps"]))
                panels[pass_name] = [
                    Series(f"{impl} {dtype}" + (f" [{variant}]" if variant != deploy.DEFAULT.name else ""), impl, dtype,
                           sorted(points), variant)
                    for (impl, dtype, variant), points in sorted(lines.items(),
                                                                 key=lambda kv: (kv[0][0], kv[0][1],
                                                                                 VARIANT_ORDER.get(kv[0][2], 9)))]
            roof = [e["roofline_gbps"] for e in entries if e.get("roofline_gbps")]
            peaks = [e["peak_gbps"] for e in entries if e.get("peak_gbps")]
            plots.append(PlotSpec(
                name=plot_name(family, m.machine_id, device),
                title=f"{family} on {device} · {m.label} {m.machine_id}",
                x_label="hidden size (features per token)" if token else "elements per input",
                panels=panels, roofline_gbps=max(roof) if roof else None, peak_gbps=max(peaks) if peaks else None))
    return plots


