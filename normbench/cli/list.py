"""`normbench list`: the implementations, families and checks this installation knows."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from normbench.checks import CHECKS
from normbench.sandbox import discover_isolated
from normbench.spec import load_specs

VERB = "list"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(VERB, help="list implementations, families and checks")
    parser.add_argument("--impl-path", action="append", default=[], metavar="MODULE:ATTR",
                        help="also load an implementation that is not installed")
    parser.add_argument("--spec-dir", action="append", default=[], metavar="DIR", help="extra spec directory")


def run(args: argparse.Namespace) -> int:
    specs = load_specs(args.spec_dir, known_checks=CHECKS)
    # Plugins are imported in child processes: one that crashes or exits at import is listed as a problem.
    registry = discover_isolated(args.impl_path, families=specs.specs)
    print("Implementations")
    rows = [[i.name, i.family, ", ".join(i.dtypes), i.source] for i in
            sorted(registry.implementations.values(), key=lambda i: (i.family, i.name))]
    print(tabulate(rows, headers=["name", "family", "dtypes", "source"]))
    if registry.unavailable:
        # a library that is missing or fails to import is listed with its error, never dropped in silence (the
        # suite shows it as one skipped item)
        print("\nUnavailable (a library missing or failing to import here; not judged)")
        rows = [[note.source, note.message] for note in sorted(registry.unavailable, key=lambda n: n.source)]
        print(tabulate(rows, headers=["name", "reason"], maxcolwidths=[None, 100]))
    print("\nFamilies")
    rows = [[s.family, len(s.properties), s.summary] for s in sorted(specs.specs.values(), key=lambda s: s.family)]
    print(tabulate(rows, headers=["family", "properties", "summary"], maxcolwidths=[None, None, 80]))
    print("\nChecks")
    rows = [[c.name, ", ".join(c.default_dtypes), c.description] for c in sorted(CHECKS.values(), key=lambda c: c.name)]
    print(tabulate(rows, headers=["check", "default dtypes", "what it verifies"], maxcolwidths=[None, None, 80]))
    problems = [*map(str, specs.errors), *map(str, registry.errors)]
    if problems:
        print("\nProblems (everything else above is still usable)")
        for line in problems:
            print(f"- {line}")
    return 1 if problems else 0
