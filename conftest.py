"""Root conftest: loads normbench's pytest plugin for `pytest suite` (and for the self-tests)."""

pytest_plugins = ["normbench.pytest_plugin"]
