"""What several self-test modules build alike: suite runs in a subprocess (suite_runs), records for the store and
the leaderboard (records), spec files (spec_files), the constructor LayerNorm-shaped mutants share (norms), items
judged through the sandbox (sandbox_items). A test module imports these, never another test module
(tests/test_test_layout.py): under pytest's importlib import mode a test module imported by another is loaded twice,
and a helper kept in one test module is hidden from the next engineer who needs it."""
