"""The conformance plan under a deployment (``--variant``): which items a deployment's bounded plan judges and
which are skipped before anything is built. The deployments themselves (eager, compile, export; how a module is
wrapped, what each supports) are normbench.deploy; the names below that came from here before are re-exported.

A deployment is applied to the module a check builds (``CheckContext.build``, Deployment.wrap). One that cannot
be built for a module raises DeploymentUnavailable (VariantUnavailable here), a ``Skip`` whose reason names the
deployment and the cause: one explained item, never a crash of the run.

What a check's verdict depends on is said by the check itself, at its registration (normbench.checks.base.CheckInfo:
`differentiates`, `deployment_sensitive`, `accuracy`); this module reads those flags, never a list of names.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from normbench import deploy
from normbench.deploy import COMPILE, EAGER, EXPORT, RECOMPILE_LIMIT, Deployment, base_class  # noqa: F401
from normbench.deploy.base import DeploymentUnavailable, UnknownDeploymentError
from normbench.deploy.compile import compiled_forward, compiler_guarded, configure_compile, warm_compile  # noqa: F401
from normbench.deploy.export import ExportedGraph, exported_graph, last_export, run_exported  # noqa: F401

#: the conformance suite's names (the canonical ones; the aliases are accepted on the command line too)
VARIANTS: tuple[str, ...] = tuple(deploy.names())
DEFAULT_VARIANT: str = deploy.DEFAULT.name
#: the names before one deployment error served the conformance suite and the benchmarks
VariantUnavailable = DeploymentUnavailable
UnknownVariantError = UnknownDeploymentError

#: The bounded plan of a deployment (the default; ``--variant-plan full`` lifts it). Every compilation costs
#: seconds on a 2-core CPU, so a deployment judges the properties whose verdict deployment can change (the checks
#: registered deployment_sensitive: the numbers against the fp64 truth, gradients, extreme inputs, dtype, the
#: state a train step writes, the fused residual path) plus its own properties, in the dtypes it is deployed in
#: (Deployment.plan_dtypes). The properties left out (invariances, layouts, batch independence, ...) follow from
#: these for a module that computes the right numbers, and are judged in eager mode.
#:
#: In the deployment's half dtype only the checks registered `accuracy` are judged; the others in float32 only.
#: Inductor and ONNX Runtime keep a half input's arithmetic in float32 inside a fused kernel, so what deployment
#: changes in half precision is where the roundings to the half dtype happen (a cast order fused away): the output
#: shows it (deployed against the fp64 truth and against eager), and the output dtype. Gradients, extreme inputs,
#: constant groups and running statistics are judged in float32 here, in every dtype in eager mode and with
#: --variant-plan full.
VARIANT_PLAN_DTYPES: dict[str, tuple[str, ...]] = {d.name: d.plan_dtypes for d in deploy.all()
                                                   if d.plan_dtypes is not None}


class CheckFlags(Protocol):
    """What the plan reads of a registered check (normbench.checks.base.CheckInfo)."""

    name: str
    variants: tuple[str, ...] | None
    differentiates: str | None
    deployment_sensitive: bool
    accuracy: bool


def check_variant(name: str) -> str:
    """The canonical name of deployment `name` (an alias is accepted); UnknownVariantError otherwise."""
    return deploy.canonical(name)


def in_bounded_plan(variant: str, check: CheckFlags, dtype: str) -> bool:
    """Whether an item belongs to the deployment's bounded plan (every default-deployment item does)."""
    deployment = deploy.get(variant)
    if deployment.default:
        return True
    if not (check.variants is not None or check.deployment_sensitive):
        return False
    if deployment.plan_dtypes is not None and dtype not in deployment.plan_dtypes:
        return False
    return dtype == "float32" or check.accuracy


#: eps variants of the equivalence checks under a deployment's bounded plan: eps = 1 shows where eps sits in the
#: deployed graph (a constant folded or moved); the tiny eps an optimizer may drop is judged by constant_rows
#: (eps = 1e-12), the default eps by every other case.
VARIANT_EPS_VARIANTS = (1.0,)


def variant_judges(variant: str, name: str, tags: tuple[str, ...] = ()) -> bool:
    """Whether the bounded plan of `variant` judges implementation `name`. The built-in float64 references are
    the truth every item is compared with, in eager mode; compiling or exporting one says nothing about code
    anybody deploys and costs as much as a real implementation, so under compile / export they are judged only
    with ``--variant-plan full``."""
    return deploy.get(variant).default or not (name.startswith("reference.") and "reference" in tags)


#: Hidden sizes of the kernel-threshold cases under a deployment (the bounded plan). A compiled or exported norm is
#: specialised to its hidden size, so every size costs a compilation (about a second of the system compiler per
#: graph on a 2-core CPU) or an export. Inductor's CPU reduction loops and ONNX Runtime's kernels branch on
#: vector-width alignment and length, not on the GPU launch thresholds the eager list
#: (normbench.inputs.THRESHOLD_FEATURES) brackets: a size that fills whole vectors, and the largest, with a tail of
#: one element past every vector width. The rows past 65535 stay (the batch dimension is dynamic: no new graph).
VARIANT_THRESHOLD_FEATURES = (1024, 8193)


def inference_only_reason(deployment: Deployment) -> str:
    return f"{deployment.name} variant is inference-only"


#: what a skipped item of an inference-only deployment says (export's, the one inference-only deployment today)
INFERENCE_ONLY_REASON = inference_only_reason(EXPORT)


def skip_reason(variant: str, check: CheckFlags) -> str | None:
    """Why an item of `check` cannot be judged under `variant` before anything is built, or None: an
    inference-only deployment cannot judge a check whose verdict rests on differentiating through the module.
    A deployment-specific check chooses its modes itself."""
    deployment = deploy.get(variant)
    if not deployment.inference_only or check.variants is not None or check.differentiates is None:
        return None
    return f"{inference_only_reason(deployment)}: {check.name} {check.differentiates}"


def prepare(variant: str) -> None:
    """Load what the deployment imports lazily (Dynamo, Inductor, the ONNX exporter, ONNX Runtime), so that the
    judge's fingerprint is taken after it (normbench.sandbox)."""
    deploy.get(variant).prepare()


def apply_variant(module: nn.Module, variant: str) -> nn.Module:
    """`module` itself, its forward now running the deployment's form (Deployment.wrap)."""
    return deploy.get(variant).wrap(module)
