"""Deployments: a module judged and timed as people ship it, not only as torch runs it eagerly.

One object per deployment (normbench.deploy.eager, .compile, .export), used alike by the conformance suite
(`wrap()`, `--variant`) and the benchmarks (`build()`, `--bench-variant`). A new deployment is one module defining
a Deployment subclass and its instance, plus its line in _DEPLOYMENTS below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normbench.deploy.base import (
    RECOMPILE_LIMIT,
    BuiltDeployment,
    Deployment,
    DeploymentUnavailable,
    UnknownDeploymentError,
    base_class,
)
from normbench.deploy.compile import COMPILE
from normbench.deploy.eager import EAGER
from normbench.deploy.export import EXPORT

__all__ = ["COMPILE", "DEFAULT", "EAGER", "EXPORT", "RECOMPILE_LIMIT", "BuiltDeployment", "Deployment",
           "DeploymentUnavailable", "UnknownDeploymentError", "all", "base_class", "canonical", "canonical_id", "get",
           "index", "names", "record_name"]

#: every deployment, in the order reports list them (the default first)
_DEPLOYMENTS: tuple[Deployment, ...] = (EAGER, COMPILE, EXPORT)
DEFAULT: Deployment = EAGER



def index(deployments: tuple[Deployment, ...]) -> dict[str, Deployment]:
    """Every name and alias of `deployments` -> its deployment; a name two of them claim is an error (it would make
    a stored record or a command line ambiguous)."""
    by_name: dict[str, Deployment] = {}
    for deployment in deployments:
        for name in deployment.names:
            if name in by_name:
                raise ValueError(f"deployment name {name!r} is claimed by {by_name[name]!r} and {deployment!r}")
            by_name[name] = deployment
    return by_name


_BY_NAME: dict[str, Deployment] = index(_DEPLOYMENTS)


def all() -> tuple[Deployment, ...]:  # noqa: A001 - normbench.deploy.all(), as the registry's API reads
    """Every deployment, the default first."""
    return _DEPLOYMENTS


def names(aliases: bool = False) -> list[str]:
    """The canonical names (for `choices=` of a command line: with `aliases`, the older names too)."""
    return [n for d in _DEPLOYMENTS for n in (d.names if aliases else (d.name,))]


def get(name: str) -> Deployment:
    """The deployment called `name` (its canonical name or an alias); UnknownDeploymentError naming the accepted
    names otherwise."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        accepted = ", ".join(f"{d.name} (alias {', '.join(d.aliases)})" if d.aliases else d.name
                             for d in _DEPLOYMENTS)
        raise UnknownDeploymentError(f"unknown variant {name!r}; known variants: {accepted}") from None


def canonical(name: str | None) -> str:
    """The canonical name of a stored or typed name (None, as in records from before deployments: the default)."""
    return DEFAULT.name if name is None else get(name).name


def record_name(entry: Mapping[str, Any]) -> str:
    """The canonical deployment name of a stored record or outcome (its `variant`): absent, as in records from before
    deployments existed, the default; an alias (a benchmark record's onnxruntime), its deployment's name. A name
    this version does not know (a newer record) stays as stored, so a reader can still show it."""
    value = entry.get("variant")
    if value is None:
        return DEFAULT.name
    deployment = _BY_NAME.get(str(value))
    return str(value) if deployment is None else deployment.name


def canonical_id(item_id: str) -> str:
    """A stored id with an alias as its deployment segment (``...-onnxruntime]``, a claim's ``...[onnxruntime]``)
    rewritten to the canonical name, so an old record pairs with a new one; any other id unchanged."""
    for deployment in _DEPLOYMENTS:
        for alias in deployment.aliases:
            for before in ("-", "["):
                if item_id.endswith(f"{before}{alias}]"):
                    return f"{item_id[:-len(alias) - 1]}{deployment.name}]"
    return item_id
