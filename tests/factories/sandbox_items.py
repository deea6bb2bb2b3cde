"""Items of a plugin module's implementations judged through the sandbox, as a run judges them: each once, when a
test first asks for it, in one pool for the module (the deployment tests of tests/remote/)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from normbench.outcome import Outcome
from normbench.registry import Registry
from normbench.sandbox import Limits, SandboxPool, discover_isolated
from normbench.spec import load_specs


class JudgedItems(dict):
    """(name, check, mode) -> that item of implementation `prefix.name`, judged in float32 on the CPU under
    `variant`."""

    def __init__(self, pool: SandboxPool, registry: Registry, prefix: str, family: str, variant: str) -> None:
        super().__init__()
        self.pool, self.registry = pool, registry
        self.prefix, self.family, self.variant = prefix, family, variant

    def __missing__(self, key: tuple[str, str, str]) -> Outcome:
        name, check, mode = key
        self[key] = self.pool.judge(self.registry.implementations[f"{self.prefix}.{name}"], self.family, check, mode,
                                    "float32", "cpu", self.variant)
        return self[key]


@contextmanager
def judged_items(source: str, prefix: str, family: str, variant: str) -> Iterator[JudgedItems]:
    """The implementations of the --impl-path `source` (every one named `prefix.*`), discovered in isolation."""
    specs = load_specs().specs
    registry = discover_isolated([source], families=specs, include_entry_points=False)
    assert not registry.errors, registry.errors
    pool = SandboxPool(specs, "ci", Limits())
    try:
        yield JudgedItems(pool, registry, prefix, family, variant)
    finally:
        pool.close()
