"""What every deployment is: a name (and the older names it still answers to), the dtypes it carries, whether it
runs inference only, what the sandbox's forkserver preloads for it, its time-limit factor, ``wrap()`` for the
conformance suite and ``build()`` for the benchmarks; and the one error both raise when it cannot be had.

Only torch and normbench.skip below: the check API, the runner, the sandbox, the benchmarks and the publishers all
import this, so it imports none of them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from normbench.skip import Skip

#: Dynamo's per-code-object recompile limit, for judging and for timing alike. The default (8) is reached by one
#: norm class across the dtypes, modes and grad modes the suite draws (and by the benchmark's shapes and passes);
#: past it Dynamo silently runs eager code, so the compile deployment would judge or time eager numerics.
RECOMPILE_LIMIT = 256
#: Dynamo's limit over all code objects together: several norm classes share a process
ACCUMULATED_RECOMPILE_LIMIT = 16 * RECOMPILE_LIMIT


class DeploymentUnavailable(Skip):  # noqa: N818 - reads as `raise DeploymentUnavailable(reason)`
    """The deployment cannot be built or run for this module, dtype or pass; the message says which and why.
    A Skip: one explained item in the conformance suite, one skipped case in the benchmarks. Not a RuntimeError,
    so a check that catches the module's own RuntimeErrors (second_order) does not swallow it."""


class UnknownDeploymentError(ValueError):
    """A name that is no deployment's name or alias."""


@dataclass
class BuiltDeployment:
    """`call(x)` runs the module as the deployment ships it; `build_s` is what building it cost (never timed)."""

    variant: str
    call: Callable[[torch.Tensor], Any]
    build_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class Deployment:
    """One way a module is shipped. Subclasses set the class attributes and implement `_forward` (judging) and
    `build` (timing); the instance is registered in normbench.deploy."""

    #: the module as built: ids and records from before deployments existed name its items, without a segment
    default: ClassVar[bool] = False
    #: the canonical name: test ids, benchmark ids, claim ids and records carry it
    name: ClassVar[str]
    #: older names accepted wherever a name is read (command lines, stored records, known-failure files)
    aliases: ClassVar[tuple[str, ...]] = ()
    #: how reports call it
    title: ClassVar[str]
    #: the dtypes it can carry; None: every dtype torch has
    dtypes: ClassVar[frozenset[str] | None] = None
    #: the dtypes its bounded conformance plan judges (where it is deployed); None: every dtype (eager)
    plan_dtypes: ClassVar[tuple[str, ...] | None] = None
    #: no autograd through what it returns: a check that differentiates cannot be judged, a backward pass timed
    inference_only: ClassVar[bool] = False
    #: the module the sandbox's forkserver imports to warm it up (normbench.preload), or None
    preload: ClassVar[str | None] = None
    #: an item's time limit is this multiple of --check-timeout (it pays its compilations inside the item)
    timeout_factor: ClassVar[float] = 1.0
    #: the benchmark passes it can time; None: every pass
    passes: ClassVar[tuple[str, ...] | None] = None

    def __repr__(self) -> str:
        return f"<deployment {self.name}>"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def prepare(self) -> None:
        """Load what the deployment imports lazily, so the judge's fingerprint is taken after it (normbench.sandbox)."""

    def unavailable(self, cause: str) -> DeploymentUnavailable:
        return DeploymentUnavailable(f"{self.name} variant unavailable: {cause}")

    def wrap(self, module: nn.Module) -> nn.Module:
        """`module` itself, its forward now running the deployed form (for judging). Its class is swapped for a
        subclass whose forward deploys; attributes, parameters, buffers, train()/eval() and deepcopy behave as
        before, so every check runs unchanged."""
        if self.default:
            return module
        cls = base_class(module)
        try:
            module.__class__ = _deployed_class(cls, self)
        except TypeError as exc:  # e.g. a class with __slots__ or a C extension type
            raise self.unavailable(f"cannot wrap {cls.__qualname__}: {exc}") from None
        return module

    def _forward(self, cls: type[nn.Module]) -> Callable[..., Any]:
        """The forward of `cls` as deployed: `forward(self_module, *args, **kwargs)`."""
        return cls.forward

    def build(self, module: nn.Module, example: torch.Tensor, *, pass_name: str = "inference",
              threads: int | None = None) -> BuiltDeployment:
        """`module` built for timing on inputs like `example` (its train/eval mode is the caller's)."""
        return BuiltDeployment(self.name, module)


_CLASSES: dict[tuple[type[nn.Module], str], type[nn.Module]] = {}


def _deployed_class(cls: type[nn.Module], deployment: Deployment) -> type[nn.Module]:
    key = (cls, deployment.name)
    if key not in _CLASSES:
        # Same name and module: messages and reprs stay those of the implementation.
        _CLASSES[key] = type(cls.__name__, (cls,), {"forward": deployment._forward(cls), "__module__": cls.__module__,
                                                     "__qualname__": cls.__qualname__,
                                                     "_normbench_variant": deployment.name,
                                                     "_normbench_base": cls})
    return _CLASSES[key]


def base_class(module: nn.Module) -> type[nn.Module]:
    """The implementation's own class of a module a deployment was applied to."""
    return getattr(type(module), "_normbench_base", type(module))


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.compile and torch.onnx print progress and warn about every export; none of it is the module's output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._inductor",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def first_line(exc: BaseException) -> str:
    """The exception's type and its first meaningful line (torch.onnx's reports start with a long preamble)."""
    text = str(exc)
    summary = text.split("## Exception summary", 1)[-1].strip() if "## Exception summary" in text else text
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:400]}"
