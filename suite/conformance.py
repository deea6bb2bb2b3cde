"""The conformance run: `pytest suite`.

This file is collected by normbench's pytest plugin (loaded from the root conftest.py), not as a Python
test module: every (implementation × property × mode × dtype × device) in the plan becomes one item here,
with an id such as ``layernorm[torch.nn.LayerNorm-shift_invariance-float32]``. Broken specs and plugins
become failing ``spec_error[...]`` / ``plugin_error[...]`` items while everything else is still judged.
"""
