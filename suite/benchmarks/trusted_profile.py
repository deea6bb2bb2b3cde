"""Where the trusted judge's requests spend their CPU: one implementation's trusted items judged through the request
protocol with the plugin's side served from a thread of this process (normbench.remote.loopback), each side under
its own cProfile, and the same items judged directly (no protocol) for the CPU the checks themselves cost.

    python suite/benchmarks/trusted_profile.py [IMPLEMENTATION] [--top N] [--dump DIR]

Prints the requests, each side's CPU time (thread time, measured unprofiled: a side waiting for the other spends
none) against the direct run's, the CPU per request on each side, and each side's top functions by own time.
--dump writes the two profiles (trusted.prof, plugin.prof) for pstats / snakeviz. Default: torch.nn.LayerNorm.
The pipe between two processes (one wake-up each way per request) is not in these figures:
suite/benchmarks/trusted_overhead.py measures the whole.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("implementation", nargs="?", default="torch.nn.LayerNorm")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from normbench.builtins import reference_implementations, torch_implementations
    from normbench.families import implementations as family_implementations
    from normbench.remote import loopback
    from normbench.remote.judge import TRUSTED_CHECKS
    from normbench.remote.server import Server
    from normbench.runner import PlanItem, item_dtypes, judge
    from normbench.spec import load_specs

    torch.set_num_threads(1)  # as the suite's pytest process and the judging children do
    specs = load_specs().specs
    found = {i.name: i for i in torch_implementations() + reference_implementations() + family_implementations()}
    if args.implementation not in found:
        parser.error(f"no built-in implementation named {args.implementation!r}")
    impl = found[args.implementation]
    spec = specs[impl.family]
    items = [(p, m, d) for p in spec.properties if p.check in TRUSTED_CHECKS for m in p.expect
             for d in item_dtypes(spec, impl, p)]

    plugin_side = cProfile.Profile()
    served: dict[str, Any] = {"requests": 0, "cpu": 0.0, "profile": None}
    handle = Server.handle

    def counted_handle(self: Server, conn: object, envelope: object) -> None:
        served["requests"] += 1
        start = time.thread_time()
        if served["profile"] is not None:
            served["profile"].enable()
        try:
            handle(self, conn, envelope)  # type: ignore[arg-type]
        finally:
            if served["profile"] is not None:
                served["profile"].disable()
            served["cpu"] += time.thread_time() - start

    def direct() -> tuple[float, list[str]]:
        start = time.thread_time()
        verdicts = [judge(PlanItem(spec, impl, p, m, d), "ci").verdict for p, m, d in items]
        return time.thread_time() - start, verdicts

    direct()  # warm: first-call costs (lazy imports, kernels) in neither figure
    direct_cpu, direct_verdicts = direct()

    def through_protocol(profile: cProfile.Profile | None) -> tuple[float, list[str]]:
        verdicts = []
        start = time.thread_time()
        for p, m, d in items:
            with loopback.remote_view(impl, spec) as view:
                if profile is not None:
                    profile.enable()
                verdicts.append(judge(PlanItem(spec, view, p, m, d), "ci").verdict)
                if profile is not None:
                    profile.disable()
        return time.thread_time() - start, verdicts

    # the CPU figures unprofiled (a profiler inflates each side by its own calls), then the profiles
    Server.handle = counted_handle  # type: ignore[method-assign]
    try:
        trusted_cpu, verdicts = through_protocol(None)
        n, plugin_cpu = served["requests"], served["cpu"]
        served.update(requests=0, cpu=0.0, profile=plugin_side)
        trusted_side = cProfile.Profile()
        through_protocol(trusted_side)
    finally:
        Server.handle = handle  # type: ignore[method-assign]
    differ = [f"{p.name}-{m}-{d}: {a} / {b}" for (p, m, d), a, b in zip(items, verdicts, direct_verdicts, strict=True)
              if a != b]

    print(f"{impl.name}: {len(items)} items, {n} requests ({n / len(items):.1f} per item)")
    print(f"  direct (no protocol) CPU      {direct_cpu:7.2f} s")
    print(f"  trusted side CPU              {trusted_cpu:7.2f} s  "
          f"({(trusted_cpu - direct_cpu) / n * 1e3:.3f} ms per request over the direct run)")
    print(f"  plugin side CPU (in handle)   {plugin_cpu:7.2f} s  ({plugin_cpu / n * 1e3:.3f} ms per request, "
          "the module's own compute included)")
    print(f"  verdicts that differ from the direct run: {'; '.join(differ) or 'none'}")
    for label, prof in (("trusted side", trusted_side), ("plugin side", plugin_side)):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
        print(f"\n== {label}: top {args.top} by own time ==")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])
        if args.dump is not None:
            args.dump.mkdir(parents=True, exist_ok=True)
            prof.dump_stats(args.dump / f"{label.split()[0]}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
