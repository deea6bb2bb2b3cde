"""What a property check is built from, shared by every module of normbench/checks/.

- `search`: `Trial`, `SearchResult`, `find_counterexample` (explicit cases, then hypothesis, which shrinks a
  failure), `search` (the same, unmeasurable trials ranked last) and `observation` (a search's `Observation`);
- `probes`: the inputs a check runs on: `Probe`, `feature_probes`, `probe_strategy`, `counterexample`, and
  `fresh_forward` / `tokens_view`, a forward that leaves the module as it was and a sequence seen as (B, T, C);
- `comparison`: `doubled` (the bound on two outputs each within tolerance), `comparisons_trial` (a trial from named
  comparisons), `affine_gradient_comparisons` (dγ, dβ against the reference's);
- `bitwise`: `bits`, `bitwise_equal`, `deviation` (how two tensors that should be bitwise equal differ) and
  `shares_memory`;
- `reductions`: what shares one statistic: `reduction_length`, `weight_reduction_length`, `statistic_groups`,
  `rounding_condition`, `num_groups_of`;
- `reference`: the float64 truth: `load_reference`, `reference_forward`;
- `seeds`: `stable_seed`.

The check API itself (`register_check`, `CheckContext`, `Observation`, `Skip`) is normbench.checks.base; each
helper's contract is shown on a broken and a correct case in tests/checks/test_toolkit.py.
"""
