"""Modules the sandbox's forkserver imports when a deployment variant is judged: importing one warms that
variant (normbench.variants.warm) once, in the process every judging child is forked from."""
