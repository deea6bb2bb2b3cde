"""The conformance suite, shipped inside the package so that it runs from any folder where normbench is installed:
`pytest --pyargs normbench.suite` or `normbench test` (and `pytest suite` in a clone of the repository).

conformance.py is what normbench's pytest plugin collects; known_failures/ holds one YAML file per implementation
(see docs/known-failures.md).
"""
