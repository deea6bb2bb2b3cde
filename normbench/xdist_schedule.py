"""Keep every item of one implementation on one xdist worker when a deployment variant is judged.

Under ``--variant compile`` most of an item's time is Inductor compiling (C++ through the system compiler, about
a second per graph on a 2-core CPU), and the graphs one item compiles are the ones the next item of the same
implementation needs (normbench.deploy caches them per class in the judging process). With xdist's default
``load`` distribution the items of one implementation are spread over the workers, so each worker's judging
process compiles the same graphs again (the FX graph cache on disk only helps once the other worker has
finished writing). Grouping by implementation pays each compile once. Eager runs keep ``load``: their items are
cheap and many small groups balance worse than items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xdist.scheduler import LoadScopeScheduling


class ImplementationScheduling(LoadScopeScheduling):
    """xdist's load-scope scheduling with the implementation as the scope."""

    def __init__(self, config: Any, log: Any, scopes: Mapping[str, str]) -> None:
        super().__init__(config, log)
        self._scopes = dict(scopes)

    def _split_scope(self, nodeid: str) -> str:
        # ids are "<file>::<family>[<implementation>-<property>...]"; items the plan does not know (a problem
        # item naming a bad plugin or spec) are a scope of their own
        return self._scopes.get(nodeid.rpartition("::")[2], nodeid)
