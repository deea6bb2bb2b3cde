"""normbench: a conformance and benchmark suite for normalization layers."""

# `normbench.fold` is the function (it shadows its module as an attribute of the package);
# `from normbench.fold import register_fold_handler` still reaches the module.
from normbench.fold import FoldError, fold
from normbench.implementation import Implementation, ImplementationError
from normbench.registry import PluginUnavailable
from normbench.version import __version__

__all__ = ["FoldError", "Implementation", "ImplementationError", "PluginUnavailable", "__version__", "fold"]
