"""The conformance run: `pytest --pyargs normbench.suite`, `normbench test`, or `pytest suite` in a clone.

This file is collected by normbench's pytest plugin (registered through the `pytest11` entry point), not as a
Python test module: every (implementation × property × mode × dtype × device) in the plan becomes one item here,
with an id such as ``layernorm[torch.nn.LayerNorm-shift_invariance-float32]``. Broken specs and plugins become
failing ``spec_error[...]`` / ``plugin_error[...]`` items while everything else is still judged.
"""
