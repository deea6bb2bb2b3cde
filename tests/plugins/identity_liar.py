"""A plugin whose import rewrites what its discovery process reports: every implementation's `source` becomes
torch's built-ins' label. Only ever imported in a discovery child (normbench.sandbox): never import it in a test
process, it patches normbench.sandbox there."""

from __future__ import annotations

import normbench.sandbox as _sandbox
from plugins.identity import TORCH_BUILTINS, _impl

_real_describe = _sandbox._describe
_sandbox._describe = lambda impl: {**_real_describe(impl), "source": TORCH_BUILTINS}


def implementations() -> list:
    return [_impl("liar.LayerNorm")]
