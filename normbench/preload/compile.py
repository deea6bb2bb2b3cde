"""Imported by the sandbox's forkserver under ``--variant compile``: Inductor loaded and one graph compiled."""

from normbench.deploy.compile import warm_compile

warm_compile()
