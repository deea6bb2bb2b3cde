"""Which items the trusted process judges itself, and how: the verdicts a plugin's process cannot forge.

An item of a check in `TRUSTED_CHECKS`, under any deployment (the plugin's side compiles or exports the module it
builds: `TRUSTED_VARIANTS`), runs its check here, in the process that never imports plugin code (pytest's,
or an xdist worker), on a `RemoteModule` whose module lives in the implementation's judging child. The truth, the
tolerances, the comparison and the verdict are computed here from tensors received as data; the child is asked only
to build, set, call and differentiate. So a forged outcome written into the pipe, a tensor subclass that compares
equal to anything, swapped judge code or an edited check registry in the plugin's process cannot change these
verdicts.

The other checks still run beside the plugin (their outcome says ``judged_in: plugin process``): they need what the
protocol does not carry yet (compile's count of Inductor graphs, accelerators). Aliasing
crosses as a fact the plugin's side reports per output (normbench.remote.aliases), an input's identity across calls
as a handle to the tensor kept over there (normbench.remote.identity), a deepcopy as a new handle, the module's own
state_dict as plain tensors by key, and what .to(dtype) left as a report checked against the mirror
(normbench.remote.attributes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from normbench import deploy, wire
from normbench.remote import tensors as wire_tensors
from normbench.verdicts import Verdict

if TYPE_CHECKING:
    from normbench.item_clock import ItemClock
    from normbench.sandbox import Sandbox

#: checks whose every step is a build, a deep copy, a parameter write, a forward, a backward or the module's own
#: state_dict / load_state_dict (or a fact the plugin's side reports, checked here): run here on the remote module
TRUSTED_CHECKS = frozenset({
    "forward_equivalence", "gradient_equivalence", "weight_gradient_reduction", "shift_invariance",
    "scale_invariance", "permutation_equivariance", "batch_independence", "pad_mask_independence",
    "noncontiguous_input", "empty_batch", "train_eval_consistency", "running_statistics", "adversarial_inputs",
    "constant_rows", "dtype_preservation", "pack_pad_equivalence", "init_scaling", "leading_ranks",
    "normalization_statistics", "stateful_trajectory", "batch_invariance", "determinism", "frozen_parameters",
    "gradient_layout", "repeated_use", "masked_backward", "residual_identity", "fused_residual",
    "parameter_updates", "nonfinite_containment", "gradcheck",
    # aliasing as a fact the plugin's side reports per output (normbench.remote.aliases); an input's identity
    # across calls kept by handle over there (normbench.remote.identity)
    "output_not_alias", "no_stale_output",
    # a fixed per-channel affine map, measured from the outside: builds, deep copies and forwards only
    "foldability",
    # the module's own state_dict / load_state_dict run over there and cross as plain tensors by key, a deepcopy by
    # handle, the tensors .to(dtype) left as a report checked against the mirror (normbench.remote.attributes)
    "module_hygiene",
    # double backward run over there: a create_graph=True backward keeps the first-order gradients' graph there,
    # and a second backward through them asks the plugin's second-order gradients (proxy._RemoteGrad)
    "second_order_gradients",
})
#: where an outcome's verdict was computed, in its metrics, and why an item of a trusted check was not
JUDGED_IN = "judged_in"
TRUSTED_FALLBACK = "trusted_fallback"


#: deployments the plugin's side applies to the module it builds when the build request names one (CheckContext.build
#: through proxy.RemoteFactory.converting), so their items are judged here too: torch.compile wraps the forward over
#: there, export runs it in ONNX Runtime over there, and everything the protocol carries is the deployed module's;
#: export_ops reads the graph's description as plain data (RemoteModule.exported_graph)
TRUSTED_VARIANTS = frozenset({deploy.DEFAULT.name, deploy.COMPILE.name, deploy.EXPORT.name})
#: checks of a deployment itself whose every step is a build, a forward or a backward: judged here under it
#: (no_recompile_storm counts Inductor's graphs in the judging process: beside the plugin)
TRUSTED_VARIANT_CHECKS = {deploy.COMPILE.name: frozenset({"variant_matches_eager"}),
                          deploy.EXPORT.name: frozenset({"variant_matches_eager", "export_train_eval_semantics",
                                                         "export_ops"})}


def trusted(check: str, variant: str, device: str = "cpu") -> bool:
    """Whether this item is judged in the trusted process. CPU items only: tensors cross as host memory, and a
    check on an accelerator combines the module's tensors with its own on that device (a CUDA item is judged
    beside the plugin, as before, and says so)."""
    return (device == "cpu" and variant in TRUSTED_VARIANTS
            and (check in TRUSTED_CHECKS or check in TRUSTED_VARIANT_CHECKS.get(variant, ())))


def judge_trusted(sandbox: Sandbox, family: str, prop_name: str, mode: str, dtype: str, device: str,
                  clock: ItemClock, variant: str = deploy.DEFAULT.name) -> tuple[str, Any]:
    """("outcome", (Outcome, tainted)) computed here (tainted: the plugin's process changed torch's global state, so
    it is replaced), or the sandbox's own statuses: ("timeout", None), ("died", why),
    ("protocol", what), and ("fallback", why) for an item the protocol cannot carry."""
    from normbench.child_outcomes import death as _death
    from normbench.child_outcomes import tampering_summary
    from normbench.child_outcomes import with_findings as _with_findings
    from normbench.remote.proxy import ChildLost, Session, Unmirrored, drop_all, remote_implementation
    from normbench.runner import PlanItem, error_outcome, judge

    child = sandbox.child
    assert child is not None
    session = Session(child.conn, clock,
                      wire_tensors.spill_folder(sandbox.output))
    spec = sandbox.specs[family]
    prop = next(p for p in spec.properties if p.name == prop_name)
    view, _ = remote_implementation(sandbox.impl, session, tuple(spec.state))
    prepared: set[str] = child.__dict__.setdefault("trusted_prepared", {deploy.DEFAULT.name})
    if variant not in prepared:
        # the deployment's lazy imports, over there, before this item's first request (with it: no round trip),
        # after the last item was verified: the plugin's side retakes its fingerprint after them, as beside the check
        session.pending.append({"op": "prepare", "variant": variant})
        prepared.add(variant)
    try:
        # once per judging process: what its import changed, or why it has no implementation
        hello = getattr(child, "trusted_hello", None)
        if hello is None:
            hello, _ = session.request({"op": "hello"})
            child.trusted_hello = hello  # type: ignore[attr-defined]
        findings = [wire.text(f, "an import finding", 2000) for f in hello.get("findings") or []][:64]
        load_error = hello.get("load_error")
        if load_error is not None:
            item = PlanItem(spec, sandbox.impl, prop, mode, dtype, device, variant)
            return "outcome", (_with_findings(error_outcome(item, wire.text(load_error, "the load error")), findings),
                               False)
        outcome = judge(PlanItem(spec, view, prop, mode, dtype, device, variant), sandbox.profile)
        # Freed, and asked what the calls changed of torch's global state, in one request: a module that leaves
        # grad mode off or replaces a torch function is an error, as when it was judged beside its module.
        # every module of the item, its deep copies too (beside the check they die with it)
        session.pending.append({"op": "drop", "handles": sorted(session.issued), "kept": "all"})
        verified, _ = session.request({"op": "verify"})
        changed = [wire.text(c, "a change", 500) for c in verified.get("changed") or []][:64]
    except ChildLost as lost:
        if lost.status == "timeout":
            child.kill()
            return "timeout", None
        if lost.status == "died":
            return "died", _death(child.process)
        child.kill()
        return "protocol", lost.detail
    except Unmirrored as exc:
        drop_all(session)
        return "fallback", str(exc)
    outcome.metrics = {**outcome.metrics, JUDGED_IN: "trusted process"}
    if changed:
        outcome.verdict, outcome.observed, outcome.counterexample = Verdict.ERROR, None, None
        outcome.metrics = {JUDGED_IN: "trusted process"}
        outcome.summary = tampering_summary(sandbox.impl.name, changed)
    return "outcome", (_with_findings(outcome, findings), bool(changed))
