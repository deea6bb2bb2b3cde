"""``torch.compile`` with Inductor and its default options.

Judging (`wrap`): ``dynamic=True``, because every family's checks draw varying shapes (batch, sequence and spatial
sizes) from hypothesis; Inductor compiles once per module class, dtype, grad mode, train/eval and shape class (the
graphs are cached per class in the judging process and on disk by Inductor's FX graph cache). A failure of
torch.compile itself, where the eager forward runs, is DeploymentUnavailable: one explained item.

Timing (`build`): ``dynamic=False``: each case is compiled for its own shape, as a fixed-shape deployment is. The
first call compiles; `build` makes that call (and one more, so a guard-triggered recompile is paid too) before
anything is timed and reports the seconds it took as `build_s`, never inside a timed region.
"""

from __future__ import annotations

import contextlib
import copy
import time
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from normbench.deploy.base import (
    ACCUMULATED_RECOMPILE_LIMIT,
    RECOMPILE_LIMIT,
    BuiltDeployment,
    Deployment,
    DeploymentUnavailable,
    base_class,
    first_line,
    quiet,
)
from normbench.skip import Skip


def set_recompile_limits() -> None:
    """Raise Dynamo's recompile limits to RECOMPILE_LIMIT (never lower them)."""
    import torch._dynamo

    dynamo_config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))
    if hasattr(dynamo_config, "accumulated_recompile_limit"):
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit,
                                                        ACCUMULATED_RECOMPILE_LIMIT)


_configured = False


def configure_compile() -> None:
    """Dynamo/Inductor settings for judging: the recompile limit, and hitting it an error (past it Dynamo would
    silently judge eager numerics), one compile thread per judge process (each xdist worker already owns one
    core)."""
    global _configured
    if _configured:
        return
    import torch._dynamo
    import torch._inductor.config as inductor_config

    set_recompile_limits()
    if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
        torch._dynamo.config.fail_on_recompile_limit_hit = True
    inductor_config.compile_threads = 1
    _configured = True


def compiled_forward(cls: type[nn.Module], fresh: bool = False) -> Callable[..., Any]:
    """``torch.compile(cls.forward, dynamic=True)``. Dynamo caches compiled graphs on the code object, so every
    instance of the class shares them. `fresh` compiles a copy of the code: a cache of its own, so a count of
    compilations does not depend on what earlier items compiled."""
    configure_compile()
    forward = cls.forward

    def call(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return forward(self, *args, **kwargs)

    # A code object per class (and per fresh compile): Dynamo keys its cache and its recompile limit on the code
    # object, and compiling torch's own forward directly would put every torch.nn class on one shared wrapper
    # frame (external_utils.wrap_inline), whose limit the suite exhausts within a few items.
    own = types.FunctionType(call.__code__.replace(co_name=f"{cls.__name__}_forward"), call.__globals__,
                             f"{cls.__name__}_forward", call.__defaults__, call.__closure__)
    return torch.compile(own, dynamic=True)


def compiler_guarded(module: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(module, *args)` for a compiled forward `fn`; a failure of torch.compile itself becomes
    DeploymentUnavailable (see _raise_if_compiler_failed)."""
    try:
        return fn(module, *args, **kwargs)
    except Exception as exc:
        _raise_if_compiler_failed(module, base_class(module), args, kwargs, exc)
        raise


def _raise_if_compiler_failed(module: nn.Module, cls: type[nn.Module], args: tuple[Any, ...],
                              kwargs: dict[str, Any], exc: Exception) -> None:
    """A compiled forward raised: when the eager forward of a copy runs on the same inputs, torch.compile itself
    failed on this module (a Dynamo internal assertion, an Inductor lowering error, ...), which is the deployment
    that cannot be built for it (one explained item), not an error of the implementation. When eager raises as
    well, the module's own error stands. The eager retry runs on a copy of the module and of the inputs, so the
    module itself sees only the failed compiled call."""
    if isinstance(exc, Skip):
        return
    clone = copy.deepcopy(module)
    clone.__class__ = cls

    def fresh(value: Any) -> Any:
        return value.detach().clone() if isinstance(value, torch.Tensor) else value

    try:
        with torch.no_grad():
            cls.forward(clone, *map(fresh, args), **{k: fresh(v) for k, v in kwargs.items()})
    except Exception:
        return
    raise COMPILE.unavailable(f"torch.compile failed on {cls.__qualname__} where the eager forward runs: "
                              f"{first_line(exc)}") from None


def warm_compile() -> None:
    """Pay the compile deployment's one-time costs in the sandbox's forkserver (normbench.preload), so each judging
    process forked from it starts warm: about 3 s of imports, CPU-ISA probing and first-compile setup per
    process, measured on the 2-core CPU. The forkserver forks every child, so nothing here may leave a
    thread behind (tqdm's monitor thread is switched off) or an OpenMP pool (one intra-op thread)."""
    from torch._dynamo import reset

    try:  # not a dependency: where it is installed, Inductor's progress bars would start its monitor thread
        import tqdm
    except ImportError:
        pass
    else:
        tqdm.tqdm.monitor_interval = 0
    torch.set_num_threads(1)
    COMPILE.prepare()

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w) * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))

    x = torch.randn(3, 5, requires_grad=True)
    w = torch.ones(5, requires_grad=True)
    # A failure here (no C++ compiler, an Inductor error) must not take the forkserver down: each judging
    # process meets it again and reports it on its items.
    with contextlib.suppress(Exception), quiet():
        torch.compile(norm, dynamic=True)(x, w).sum().backward()
    reset()


class Compile(Deployment):
    name = "compile"
    title = "torch.compile (Inductor)"
    #: Inductor on the CPU is deployed in bfloat16 beside float32
    plan_dtypes = ("float32", "bfloat16")
    preload = "normbench.preload.compile"
    #: a cold Inductor compile is 20-30 s on a loaded 2-core machine, paid inside the item
    timeout_factor = 4

    def prepare(self) -> None:
        configure_compile()
        import torch._inductor.compile_fx  # noqa: F401 - imported for its side effects, before the fingerprint

    def _forward(self, cls: type[nn.Module]) -> Callable[..., Any]:
        fn = compiled_forward(cls)

        def forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            return compiler_guarded(module, fn, *args, **kwargs)
        return forward

    def build(self, module: nn.Module, example: torch.Tensor, *, pass_name: str = "inference",
              threads: int | None = None) -> BuiltDeployment:
        from torch._dynamo.utils import counters

        # Every case shares its module class's forward code with the other cases (shapes, passes): past the default
        # limit the next case would silently run eagerly, and automatic dynamic shapes would give the 2nd shape a
        # dynamic-shape kernel. Static shapes and the raised limit compile each case for its own shape.
        set_recompile_limits()
        compiled = torch.compile(module, dynamic=False)
        before = counters["stats"]["unique_graphs"]
        started = time.perf_counter()
        try:
            with quiet():
                for _ in range(2):  # the second call pays a recompile a guard on the first call's state would cause
                    if pass_name == "inference":
                        with torch.inference_mode():
                            compiled(example)
                    else:
                        out = compiled(example)
                        if pass_name != "forward":
                            first = out[0] if isinstance(out, tuple | list) else out
                            first.sum().backward()  # compiles the backward graph too (AOTAutograd)
        except Exception as exc:  # noqa: BLE001 - whatever Inductor raises, the case becomes one explained skip
            raise DeploymentUnavailable(f"torch.compile failed: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:300]}") from exc
        build_s = time.perf_counter() - started
        return BuiltDeployment(self.name, compiled, build_s,
                               {"backend": "inductor", "graphs": counters["stats"]["unique_graphs"] - before})


COMPILE = Compile()
