"""Only the package list, which pyproject.toml cannot express: every package under normbench/ found automatically (a
hand-written list once left out normbench.preload, and a wheel install lost the compile warm-up), plus reference/
and specs/, shipped as normbench.reference and normbench.specs (pyproject.toml's package-dir), and two top-level
modules that import no torch: normbench_entry (the pytest entry point) and normbench_forkserver (what it starts before
the normbench package imports torch). Everything else is in pyproject.toml; tests/test_packaging.py builds the wheel
and runs it."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["normbench", "normbench.*"]), "normbench.reference", "normbench.specs"],
      py_modules=["normbench_entry", "normbench_forkserver"])
