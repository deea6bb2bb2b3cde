"""The module as built: what every check judged and every benchmark timed before deployments existed. Its items'
ids and its records carry no deployment segment."""

from __future__ import annotations

from normbench.deploy.base import Deployment


class Eager(Deployment):
    name = "eager"
    title = "torch eager"
    default = True


EAGER = Eager()
