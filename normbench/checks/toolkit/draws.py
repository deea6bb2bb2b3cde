"""Hypothesis's draws for a check, the same wherever normbench runs.

Hypothesis draws, now and then (1 draw in 20), a constant found in the source of the "local" modules the process has
imported: those outside site-packages and the standard library (hypothesis.internal.constants_ast). Which modules
those are depends on how normbench was installed and where it runs. With an editable install (this repository's CI)
the 67 local modules, normbench's own among them, gave 725 constants; with `pip install normbench` normbench's give
none; the user's conftest.py and, in the process beside the plugin, the plugin's own modules give theirs. So the
same plugin drew other cases, and could get another verdict, depending on the install, the folder, and constants its
author put in its source. The checks' searches draw from hypothesis's own provider without the local constants, so
what a check draws depends only on its strategy and its derandomized seed. Parsing those modules also cost every
judging process about half a second.

While a check's search runs, hypothesis's own provider (every draw goes through it, whatever path creates it) offers
no local constant, and the cache of the constants permitted per kind of draw, which every provider shares, is
emptied before and after: the search keeps every feature of hypothesis's backend, and a user's own hypothesis tests
in the same process draw as they did. tests/checks/test_draws.py fails if a hypothesis upgrade moves what this
relies on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis.internal.conjecture.providers import CONSTANTS_CACHE, HypothesisProvider
from hypothesis.internal.constants_ast import Constants

_NO_LOCAL_CONSTANTS = property(lambda self: Constants())


@contextlib.contextmanager
def judge_draws() -> Iterator[None]:
    """Within: hypothesis draws no constant from the source of this process's local modules."""
    saved = HypothesisProvider.__dict__.get("_local_constants")
    HypothesisProvider._local_constants = _NO_LOCAL_CONSTANTS  # type: ignore[assignment,method-assign]
    CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        if saved is None:
            del HypothesisProvider._local_constants
        else:
            HypothesisProvider._local_constants = saved  # type: ignore[assignment,method-assign]
        CONSTANTS_CACHE.cache.clear()
