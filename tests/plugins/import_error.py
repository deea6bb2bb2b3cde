"""A plugin module that cannot even be imported."""

import normbench_this_module_does_not_exist  # noqa: F401
