"""Kept only for normbench/checks/second_order.py, which still imports from here: the search lives in
normbench.checks.toolkit.search; remove this module once second_order.py imports from there."""

from normbench.checks.toolkit.search import Trial, find_counterexample

__all__ = ["Trial", "find_counterexample"]
