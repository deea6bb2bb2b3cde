"""The claims lab's registry: every claim by name, which of them train models, and the run of a selection of them
per deployment. The claims themselves live in speed.py (speed and memory) and training.py (training dynamics)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from normbench import deploy
from normbench.claims import training as training_claims
from normbench.claims.result import ClaimResult
from normbench.claims.speed import folded_norm_vs_layernorm, rmsnorm_vs_layernorm


def _rmsnorm_claims(device: str, variants: tuple[str, ...] = (deploy.DEFAULT.name,)) -> list[ClaimResult]:
    out = []
    for variant in variants:
        if deploy.get(variant).default:
            out.append(rmsnorm_vs_layernorm(device))
        else:
            # each case costs a compile / export per module: float32 only keeps it to a few minutes on 2 cores
            out.append(rmsnorm_vs_layernorm(device, dtypes=("float32",), variant=variant))
    return out


def _folded_claims(device: str, variants: tuple[str, ...] = (deploy.DEFAULT.name,)) -> list[ClaimResult]:
    return [c for variant in variants for c in folded_norm_vs_layernorm(device, variant=variant)]


def _training(name: str) -> Callable[..., list[ClaimResult]]:
    def run(device: str, variants: tuple[str, ...] = (deploy.DEFAULT.name,)) -> list[ClaimResult]:
        # Small models: their ops are too small to gain from a second thread, and on a shared CPU each parallel
        # region can wait a scheduler tick for its other thread. One thread makes their minutes predictable.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return [getattr(training_claims, name)(device)]
        finally:
            torch.set_num_threads(threads)
    return run


#: every claim: a function of (device, variants) returning its results
CLAIMS: dict[str, Callable[..., list[ClaimResult]]] = {
    "rmsnorm_vs_layernorm": _rmsnorm_claims,
    "folded_norm_vs_layernorm": _folded_claims,
    "powernorm_batch_statistics": _training("powernorm_batch_statistics"),
    "prenorm_postnorm_gradients": _training("prenorm_postnorm_gradients"),
    "deepnorm_depth": _training("deepnorm_depth"),
}
#: the training-dynamics claims train small models for minutes: only with --training or when named by --only
TRAINING_CLAIMS: tuple[str, ...] = ("powernorm_batch_statistics", "prenorm_postnorm_gradients", "deepnorm_depth")


def run_claims(device: str = "cpu", only: list[str] | None = None, variants: tuple[str, ...] = (deploy.DEFAULT.name,),
               training: bool = False) -> list[ClaimResult]:
    unknown = sorted(set(only or []) - set(CLAIMS))
    if unknown:
        raise ValueError(f"unknown claim(s) {unknown}; known: {sorted(CLAIMS)}")
    variants = tuple(dict.fromkeys(deploy.canonical(v) for v in variants))
    results: list[ClaimResult] = []
    for name, run in CLAIMS.items():
        if only and name not in only:
            continue
        if not only and name in TRAINING_CLAIMS and not training:
            continue
        results += run(device, variants)
    return results
