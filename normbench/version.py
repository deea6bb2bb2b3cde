"""normbench's version: a leaf module, so the store stamps records without importing the package's plugin API."""

__version__ = "0.1.0"
