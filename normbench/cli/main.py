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


def _version() -> str:
    """"normbench 0.1.0 (commit 1a2b3c4d5e6f, torch 2.13.0+cpu)": what a bug report needs."""
    import torch

    import normbench
    from normbench.store.machine import normbench_commit

    return f"normbench {normbench.__version__} (commit {normbench_commit()}, torch {torch.__version__})"


class _Version(argparse.Action):
    """--version, computed only when asked (the commit takes a git call)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(_version())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="normbench", description="Conformance and benchmark suite for "
                                     "normalization layers.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the normbench version and exit")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs = _verbs()
    for module in verbs.values():
        module.add_parser(sub)  # type: ignore[attr-defined]
    args, rest = parser.parse_known_args(argv)
    verb = verbs[args.verb]
    # A verb that wraps another tool (`normbench test` runs pytest) takes the arguments it does not know as that
    # tool's; for every other verb they are an error, as with parse_args.
    if getattr(verb, "PASSES_UNKNOWN_ARGS", False):
        args.passthrough = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(verb.run(args) or 0)  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
