"""Root conftest of a clone: `pytest suite` and the project's own tests.

normbench's pytest plugin registers itself through its `pytest11` entry point (named after its module, so listing it
here registers nothing twice); listing it keeps a clone working where entry-point plugins are not loaded
(PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, or an install older than the entry point).
"""

import torch

pytest_plugins = ["normbench.pytest_plugin"]


def pytest_configure(config):
    # One torch thread per process, as in a conformance run (which the plugin pins itself): xdist workers share the
    # cores.
    torch.set_num_threads(1)
