"""Modules the sandbox's forkserver imports before it forks any judging process: importing ``compile`` pays the
compile variant's one-time costs there (normbench.deploy.compile.warm_compile), once per process that judges."""
