"""Throughput benchmarks: bytes model, timers (CPU and CUDA), roofline, the case harness and its pytest plugin.

A norm is memory-bound, so every time is turned into GB/s through a bytes model (normbench.bench.bytes_model)
and given as a percentage of the copy bandwidth measured in the same session (normbench.bench.roofline).
Benchmarks run serially, never under pytest-xdist: parallel workers would share the very cores and memory
bandwidth being measured.
"""

from normbench.bench.harness import PASSES, BenchCase, plan_cases
from normbench.bench.timer import Schedule, Timing, calibrate, measure

__all__ = ["PASSES", "BenchCase", "Schedule", "Timing", "calibrate", "measure", "plan_cases"]
