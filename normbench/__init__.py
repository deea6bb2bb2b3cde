"""normbench: a conformance and benchmark suite for normalization layers."""

from normbench.implementation import Implementation, ImplementationError

__version__ = "0.1.0"
__all__ = ["Implementation", "ImplementationError", "__version__"]
