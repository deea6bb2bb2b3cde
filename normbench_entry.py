"""normbench's pytest entry point (pytest11): a conformance run's forkserver started before torch is imported
(normbench_forkserver), then the plugin's hooks (normbench.pytest_plugin), which pytest registers under the entry
point's name. Only pytest imports this module."""

import sys

from normbench_forkserver import start_early

start_early(sys.argv[1:])

# The hooks: pytest registers this module under the entry point's name, normbench.pytest_plugin.
from normbench import pytest_plugin as _plugin  # noqa: E402 - after the forkserver's start, on purpose

globals().update({name: value for name, value in vars(_plugin).items() if name.startswith("pytest_")})
