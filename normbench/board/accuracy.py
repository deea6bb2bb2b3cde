"""Accuracy: the worst error against the float64 truth per implementation, dtype and device."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from normbench.board.model import Machine, Table, column
from normbench.compare import ULP_DEFINITION
from normbench.verdicts import Verdict

#: checks whose tol_ratio is an error against the float64 truth (the accuracy table and the ranking's worst error)
ACCURACY_CHECKS = ("forward_equivalence", "gradient_equivalence", "weight_gradient_reduction", "fused_residual")


def accuracy_table(machines: list[Machine], outcomes: dict[str, list[dict[str, Any]]]) -> Table:
    cells: dict[tuple[str, str, str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for mid, os_ in outcomes.items():
        for o in os_:
            if o.get("check") not in ACCURACY_CHECKS or o.get("verdict") in (Verdict.ERROR, Verdict.SKIP):
                continue
            metrics = o.get("metrics") or {}
            slot = cells[(o["family"], o["implementation"], o["dtype"], o.get("device", "cpu"))].setdefault(mid, {})
            pairs = (("fwd", "output.max_ulp"), ("bwd", "grad_input.max_ulp"), ("tol", "tol_ratio"))
            if o.get("ulp") != ULP_DEFINITION:  # an older record's element-wise ulp: not shown, never misread
                pairs = pairs[2:]
            for name, key in pairs:
                value = metrics.get(key)
                if isinstance(value, int | float) and math.isfinite(value):
                    slot[name] = max(slot.get(name, 0.0), float(value))
    headers = ["family", "implementation", "dtype", "device"]
    for m in machines:
        headers += [column("fwd max ulp", m, machines), column("bwd max ulp", m, machines),
                    column("worst error / tolerance", m, machines)]
    dtype_order = {"float64": 0, "float32": 1, "float16": 2, "bfloat16": 3}
    rows = []
    for key in sorted(cells, key=lambda k: (k[0], k[1], dtype_order.get(k[2], 9), k[3])):
        row: list[Any] = list(key)
        for m in machines:
            slot = cells[key].get(m.machine_id, {})
            row += [slot.get("fwd"), slot.get("bwd"), slot.get("tol")]
        rows.append(row)
    return Table("accuracy", "Accuracy against the float64 truth", headers, rows,
                 ["Worst error over every case of forward_equivalence (output) and gradient_equivalence (grad of "
                  "the input), in units in the last place of the dtype at the output's scale (max|truth|, the "
                  "scale the tolerance uses, so outputs near zero do not inflate it; blank for older records, "
                  "which measured each element's own ulp); `worst error / tolerance` is the largest "
                  "ratio of measured error to the spec's bound over every compared tensor of those checks and of "
                  "weight_gradient_reduction (dγ, dβ over 8192 rows) and fused_residual (≤ 1 passes)."])


