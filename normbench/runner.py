"""The plan (spec × implementation × property × mode × dtype × device) and the judging of one item.

Independent of pytest, so the CLI and the self-tests can judge items directly; the pytest plugin only
turns plan items into test items and outcomes into reports.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from normbench import checks as _checks  # noqa: F401 - registers every check
from normbench.checks.base import CHECKS, CheckContext, Skip
from normbench.compare import ULP_DEFINITION
from normbench.implementation import Implementation, ImplementationError
from normbench.judge_guard import shield_lazy_modules
from normbench.outcome import ItemKey, Outcome
from normbench.registry import Registry
from normbench.spec import PropertySpec, Spec
from normbench.variants import (
    DEFAULT_VARIANT,
    check_variant,
    in_bounded_plan,
    inference_only_reason,
    skip_reason,
    variant_judges,
)
from normbench.verdicts import Verdict


@dataclass(frozen=True)
class PlanItem:
    spec: Spec
    impl: Implementation
    prop: PropertySpec
    mode: str
    dtype: str
    device: str = "cpu"
    variant: str = DEFAULT_VARIANT

    @property
    def expect(self) -> str:
        return self.prop.expect[self.mode]

    @property
    def key(self) -> ItemKey:
        return ItemKey(self.spec.family, self.impl.name, self.prop.name, self.mode, self.dtype, self.device,
                       self.variant)

    @property
    def test_id(self) -> str:
        """Stable id built from spec fields (normbench.outcome.ItemKey.test_id)."""
        return self.key.test_id


def item_dtypes(spec: Spec, impl: Implementation, prop: PropertySpec) -> list[str]:
    wanted = prop.dtypes or CHECKS[prop.check].default_dtypes
    return [d for d in wanted if d in spec.tolerances and d in impl.dtypes]


def build_plan(specs: dict[str, Spec], registry: Registry, selected: Iterable[str] = (),
               devices: Iterable[str] = ("cpu",), variants: Iterable[str] = (DEFAULT_VARIANT,),
               full_variant_plan: bool = False) -> list[PlanItem]:
    """Every (implementation, property, mode, dtype, device, variant) item. A property whose check is registered
    for some variants only (compiled == eager, the ONNX op set, ...) is planned under those variants only; under
    compile and export the plan is bounded (normbench.variants.in_bounded_plan) unless `full_variant_plan`. A
    deployment's alias (onnxruntime) plans its canonical name's items."""
    chosen = set(selected)
    wanted = list(dict.fromkeys(check_variant(v) for v in variants))
    items: list[PlanItem] = []
    for impl in sorted(registry.implementations.values(), key=lambda i: (i.family, i.name)):
        if chosen and impl.name not in chosen:
            continue
        spec = specs[impl.family]
        for variant in wanted:
            if not (full_variant_plan or variant_judges(variant, impl.name, impl.tags)):
                continue
            for prop in spec.properties:
                check = CHECKS[prop.check]
                if check.variants is not None and variant not in check.variants:
                    continue
                for mode in prop.expect:
                    for dtype in item_dtypes(spec, impl, prop):
                        if not (full_variant_plan or in_bounded_plan(variant, check, dtype)):
                            continue
                        for device in devices:
                            if device in impl.devices:
                                items.append(PlanItem(spec, impl, prop, mode, dtype, device, variant))
    return items


def _outcome(item: PlanItem, verdict: Verdict, observed: str | None, summary: str, **measured: Any) -> Outcome:
    return Outcome(test_id=item.test_id, key=item.key, check=item.prop.check, expect=item.expect, verdict=verdict,
                   observed=observed, summary=summary, ulp=ULP_DEFINITION, **measured)


def error_outcome(item: PlanItem, summary: str) -> Outcome:
    """An item that has no verdict: the implementation crashed, hung, or could not be judged."""
    return _outcome(item, Verdict.ERROR, None, summary)


def skip_outcome(item: PlanItem, summary: str) -> Outcome:
    """An item not judged here, with the reason."""
    return _outcome(item, Verdict.SKIP, None, summary)


def _plugin_frames(exc: BaseException) -> str:
    """The innermost frames of an exception, enough to find the line without a wall of traceback."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return "".join(traceback.format_list(frames)).rstrip()


def failure_summary(expect: str, measured: str) -> str:
    """A failed item's summary leads with what was measured (the deviation and its numbers, which a short summary
    must not cut off); the expectation it missed is a short suffix, or, for a property the family must not have,
    the one word that matters first. The outcome's `expect` and `observed` fields keep both, structured."""
    if expect == "violated":
        return f"holds, but the family must NOT have it: {measured}"
    return f"{measured} (must hold)"


def judge(item: PlanItem, profile: str = "ci") -> Outcome:
    """Run the item's check and compare what it observed with the spec's expectation."""
    # A lazy module a plugin left in sys.modules must not break hypothesis's scan of it (normbench.judge_guard).
    shield_lazy_modules()
    ctx = CheckContext(impl=item.impl, spec=item.spec, prop=item.prop, dtype=getattr(torch, item.dtype),
                       mode=item.mode, device=torch.device(item.device), profile=profile, variant=item.variant)
    reason = skip_reason(item.variant, CHECKS[item.prop.check])
    if reason is not None:
        return _outcome(item, Verdict.SKIP, None, reason)
    start = time.perf_counter()
    try:
        obs = CHECKS[item.prop.check].fn(ctx)
    except Skip as exc:
        return _outcome(item, Verdict.SKIP, None, str(exc), duration_s=time.perf_counter() - start)
    except RuntimeError as exc:
        if item.impl.inference_only and "does not require grad" in str(exc):
            # A kernel without autograd (declared inference_only=True): the check needed a backward pass.
            return _outcome(item, Verdict.SKIP, None, f"inference only: implementation {item.impl.name!r} declares "
                                                f"inference_only=True and {item.prop.check} differentiates through "
                                                "the module", duration_s=time.perf_counter() - start)
        if ctx.deployment.inference_only and "does not require grad" in str(exc):
            # The deployed graph's outputs carry no autograd history: the check differentiated through them.
            return _outcome(item, Verdict.SKIP, None, f"{inference_only_reason(ctx.deployment)}: {item.prop.check} "
                                                "differentiates through the module",
                            duration_s=time.perf_counter() - start)
        summary = (f"implementation {item.impl.name!r} raised {type(exc).__name__}: {exc}\n"
                   f"{_plugin_frames(exc)}")
        return _outcome(item, Verdict.ERROR, None, summary, duration_s=time.perf_counter() - start)
    except ImplementationError as exc:
        return _outcome(item, Verdict.ERROR, None, str(exc), duration_s=time.perf_counter() - start)
    except Exception as exc:  # the implementation (or its inputs) raised: an error for this item only
        summary = (f"implementation {item.impl.name!r} raised {type(exc).__name__}: {exc}\n"
                   f"{_plugin_frames(exc)}")
        return _outcome(item, Verdict.ERROR, None, summary, duration_s=time.perf_counter() - start)
    duration = time.perf_counter() - start
    if ctx.not_declared:
        # Cases outside the implementation's declared ranks / hidden sizes: the verdict covers the others only.
        obs.metrics["cases_not_declared"] = len(ctx.not_declared)
        obs.summary += (f" [{len(ctx.not_declared)} case(s) not judged, outside what the implementation declares: "
                        f"{ctx.not_declared[0]}]")
    observed = "holds" if obs.holds else "violated"
    if item.expect == "report":
        verdict = Verdict.REPORT
    else:
        verdict = Verdict.PASS if observed == item.expect else Verdict.FAIL
    summary = obs.summary
    if verdict == Verdict.FAIL:
        summary = failure_summary(item.expect, obs.summary)
    return _outcome(item, verdict, observed, summary, metrics=obs.metrics, counterexample=obs.counterexample,
                    duration_s=duration)
