"""Skip: an item that does not apply. Its own module because both the check API (normbench.checks.base) and the
deployments (normbench.deploy, whose DeploymentUnavailable is one) raise it, and the check API applies the
deployments."""

from __future__ import annotations


class Skip(Exception):  # noqa: N818 - reads as `raise Skip("reason")`
    """Raised by a check when it does not apply (e.g. no float64 path); becomes a pytest skip."""
