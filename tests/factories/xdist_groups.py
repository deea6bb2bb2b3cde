"""Keep the tests that read one module-scoped run on one xdist worker, so that run happens once.

xdist's default `--dist load` hands a module's tests to whichever worker is free, so both workers of `-n 2` end up
with tests of, say, tests/test_isolation.py[serial], and each sets up the module-scoped fixture: one whole hostile
`pytest suite` run twice. `--dist loadgroup` sends the tests whose node ids end in the same `@group` to one worker
and spreads every other test as `load` does; `group_of` names the group a test belongs to."""

from __future__ import annotations

import pytest

#: scopes whose fixture a worker sets up once for every test it runs that reads it
SHARED_SCOPES = ("module", "package", "session")


def group_of(item: pytest.Item) -> str | None:
    """The group of a test that reads a module-, package- or session-scoped fixture defined in its own module: the
    module and the parameters of those fixtures (one group per parametrized run, so the serial and the xdist
    hostile runs still go to different workers); None for any other test."""
    module = item.nodeid.split("::")[0]
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    shared = sorted(name for name, defs in info.name2fixturedefs.items()
                    if defs and defs[-1].scope in SHARED_SCOPES and defs[-1].baseid == module)
    if not shared:
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    # xdist reads the group from after the node id's last '@', and only when no ']' follows it
    suffix = "".join(f",{name}={params[name]}" for name in shared if name in params)
    return "".join(c for c in f"{module}{suffix}" if c not in "[]@")


def mark_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker of a controller that distributes by group, suffix each grouped test's node id with its group, as
    xdist does for an `xdist_group` mark. Not a mark: a mark's name is a keyword, and `-k xdist` (the xdist runs of
    tests/test_isolation.py) would then select every grouped test."""
    if not getattr(config, "workerinput", {}).get(WORKERINPUT_KEY):
        return
    for item in items:
        group = group_of(item)
        if group is not None:
            item._nodeid = f"{item.nodeid}@{group}"  # what xdist's own loadgroup hook writes


#: what the controller tells each worker in its workerinput: whether to suffix the node ids with their groups
WORKERINPUT_KEY = "normbench_loadgroup"


def use_loadgroup(config: pytest.Config) -> None:
    """Under `-n N` with xdist's `load` (what -n picks when no --dist is given), distribute by group instead; any
    other --dist is kept. (A worker's own config says `--dist no`: it learns the controller's from `tell_worker`.)"""
    if not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"


def tell_worker(node: object) -> None:
    """For xdist's pytest_configure_node: tell the worker whether the controller distributes by group."""
    node.workerinput[WORKERINPUT_KEY] = node.config.getvalue("dist") == "loadgroup"  # type: ignore[attr-defined]
