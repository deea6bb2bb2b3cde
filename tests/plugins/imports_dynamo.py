"""A plugin module whose body imports torch._dynamo, as `transformers` (LlamaRMSNorm) and most modern libraries do."""

from __future__ import annotations

import torch._dynamo  # noqa: F401

from normbench import Implementation
from plugins.import_time import _Exact

implementation = Implementation(name="imports_dynamo.LayerNorm", family="layernorm", factory=_Exact)
