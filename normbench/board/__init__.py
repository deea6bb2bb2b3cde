"""The leaderboard model: a pure function of the stored records (results/raw), rendered by normbench.publish.

`build_leaderboard(records)` (build.py) turns records into tables (and plot series): the conformance matrix,
accuracy (error against the float64 truth per dtype), performance per family, the claims lab, and a ranking per
family in which a non-conforming or unbenchmarked implementation never ranks above a conforming, benchmarked one.
With records from several machines every measured column appears once per machine (M1, M2, ... with a legend).
Nothing here measures or reads anything but the records, so the same records always render the same leaderboard;
`read_leaderboard(results_dir)` reads them through normbench.store, the only part of normbench below the board it
needs besides the vocabularies (verdicts, deploy, compare's ulp definition).

    model.py        Table, Series, ClaimPlot, PlotSpec, Machine, Leaderboard; the machines of the records
    conformance.py  the conformance matrix (also printed at the end of `pytest suite`) and the verdict table
    accuracy.py     the worst error against the float64 truth
    performance.py  the benchmark cases, their speed-ups and untrusted figures; the timing and roofline tables
    ranking.py      the combined ranking per family
    claims.py       the claims lab's table and figures
    plots.py        the benchmark plots' series
    build.py        build_leaderboard (every table and plot, in the order the publishers show them), read_leaderboard

The board never imports its renderers (tests/test_layering.py).
"""
