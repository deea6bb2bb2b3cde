"""Entry point of the `normbench` console script; verbs are the modules of normbench.cli."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import normbench.cli as cli_package


def _verbs() -> dict[str, object]:
    verbs = {}
    for info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if info.name in ("main",) or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"normbench.cli.{info.name}")
        verbs[getattr(module, "VERB", info.name)] = module
    return verbs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="normbench", description="Conformance and benchmark suite for "
                                     "normalization layers.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs = _verbs()
    for module in verbs.values():
        module.add_parser(sub)  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    return int(verbs[args.verb].run(args) or 0)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
