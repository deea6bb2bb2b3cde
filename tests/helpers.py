"""Shared helpers for the self-tests: judge one implementation on one property without pytest's plugin."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from torch import nn

from normbench import Implementation
from normbench.checks import CHECKS
from normbench.outcome import Outcome
from normbench.remote.judge import trusted
from normbench.remote.loopback import remote_view
from normbench.remote.proxy import Unmirrored
from normbench.runner import PlanItem, judge
from normbench.sandbox import Limits, SandboxPool, discover_isolated
from normbench.spec import Spec, load_specs


def folder_plugins_may_write() -> Path:
    """A fresh folder any user may write, for what a test's plugin reports back (a log, a pid file): where the run
    is root, plugin code runs under a user id of its own (normbench.judge_user), which may not write into pytest's
    tmp_path. The caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix="normbench-test-"))
    folder.chmod(0o777)
    return folder


#: NORMBENCH_SELFTEST_REMOTE=1 judges the trusted checks of every self-test through the request protocol
REMOTE_ENV = "NORMBENCH_SELFTEST_REMOTE"


@cache
def specs() -> dict[str, Spec]:
    loaded = load_specs(known_checks=None)
    assert not loaded.errors, loaded.errors
    return loaded.specs


def impl(name: str, family: str, factory: Callable[..., nn.Module], **fields: object) -> Implementation:
    return Implementation(name=name, family=family, factory=factory, **fields)


def run(implementation: Implementation, prop: str, dtype: str = "float32", mode: str | None = None,
        profile: str = "ci", variant: str = "eager") -> Outcome:
    """Judge `implementation` on property `prop` of its family's spec (the spec's expectation applies), deployed
    as `variant` (normbench.variants)."""
    spec = specs()[implementation.family]
    matches = [p for p in spec.properties if p.name == prop]
    assert matches, f"{spec.family} declares no property {prop!r}"
    p = matches[0]
    assert p.check in CHECKS, f"check {p.check!r} is not registered"
    chosen = mode or next(iter(p.expect))
    assert chosen in p.expect, f"{prop} has no expectation for mode {chosen!r}: {dict(p.expect)}"
    if os.environ.get(REMOTE_ENV) == "1" and trusted(p.check, variant):
        # Every mutant through the trusted judge's request protocol: the verdict must be the one reached beside it.
        try:
            with remote_view(implementation, spec) as view:
                return judge(PlanItem(spec, view, p, chosen, dtype, variant=variant), profile)
        except Unmirrored:
            pass  # what the protocol cannot carry the sandbox judges beside the plugin, and says so: so does this
    return judge(PlanItem(spec, implementation, p, chosen, dtype, variant=variant), profile)


def assert_flags(implementation: Implementation, prop: str, **kw: object) -> Outcome:
    """The check must flag this (broken) implementation."""
    outcome = run(implementation, prop, **kw)  # type: ignore[arg-type]
    assert outcome.verdict in ("fail", "error"), f"{prop} did not flag {implementation.name}: {outcome.summary}"
    return outcome


def assert_passes(implementation: Implementation, prop: str, **kw: object) -> Outcome:
    """The check must pass this (correct) implementation."""
    outcome = run(implementation, prop, **kw)  # type: ignore[arg-type]
    assert outcome.verdict in ("pass", "report"), f"{prop} flagged {implementation.name}: {outcome.summary}"
    return outcome


def shipped(families: bool = True) -> dict[str, Implementation]:
    """Every implementation normbench ships, by name: torch's, the references and (optionally) the seed families'."""
    from normbench.builtins import reference_implementations, torch_implementations
    from normbench.families import implementations as family_implementations

    found = torch_implementations() + reference_implementations() + (family_implementations() if families else [])
    return {i.name: i for i in found}


def spec_items(implementations: dict[str, Implementation], properties: tuple[str, ...]) -> list[tuple[str, ...]]:
    """(implementation, property, mode, dtype) for every item the suite would run on these properties."""
    from normbench.runner import item_dtypes

    out: list[tuple[str, ...]] = []
    for implementation in implementations.values():
        spec = specs()[implementation.family]
        for prop in spec.properties:
            if prop.name in properties:
                out.extend((implementation.name, prop.name, mode, dtype)
                           for mode in prop.expect for dtype in item_dtypes(spec, implementation, prop))
    return out


def planned_items(implementations: dict[str, Implementation]) -> list[tuple[str, str, str, str]]:
    """(implementation, property, mode, dtype) for every item their specs plan, in one dtype each (float32 where the
    check runs it: the suite itself covers the rest). Every property's check is registered (a KeyError here names
    the one that is not)."""
    from normbench.runner import item_dtypes

    out = []
    for implementation in implementations.values():
        spec = specs()[implementation.family]
        for prop in spec.properties:
            CHECKS[prop.check]
            for mode in prop.expect:
                dtypes = item_dtypes(spec, implementation, prop)
                out.append((implementation.name, prop.name, mode, "float32" if "float32" in dtypes else dtypes[0]))
    return out


def over_items(items: list[tuple[str, ...]]) -> pytest.MarkDecorator:
    """A test parametrized over (name, prop, mode, dtype) items, each id the item's parts joined by dashes."""
    return pytest.mark.parametrize(("name", "prop", "mode", "dtype"), items, ids=["-".join(i) for i in items])


def judge_probe(target: str, name: str, limits: Limits | None = None) -> Outcome:
    """A probe plugin (tests/plugins; `target` is its --impl-path) judged through the sandbox, as a run judges it, on
    one layernorm item whose build raises what the probe measured in its judging process: the outcome says it."""
    registry = discover_isolated([target], families=specs(), include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs(), "ci", limits or Limits())
    try:
        return pool.judge(registry.implementations[name], "layernorm", "dtype_preservation", "any", "float32", "cpu")
    finally:
        pool.close()
