"""Self-tests of stateful_trajectory: state-handling mutants of the seed families are flagged (each passes a
single train forward), the built-ins and a restated correct module pass, and the authors' PN* backward is told
apart from the paper's PowerNorm."""

from __future__ import annotations

import pytest
from helpers import assert_flags, assert_passes, impl
from mutants_stateful import (
    CorrectRestatedPowerNorm,
    FrozenGradientStatisticPowerNorm,
    IgnoresOutliersUnifiedNorm,
    MomentumOnNewPowerNorm,
    ReadsAfterUpdatePowerNorm,
    WindowSlotOffByOneMABN,
)

from normbench.families.powernorm import PowerNorm, PowerNormStar


def seed(name: str, family: str, factory: type):
    return impl(name, family, factory, mask_kwarg="pad_mask")


def test_a_restated_correct_powernorm_passes():
    assert_passes(seed("restated", "powernorm", CorrectRestatedPowerNorm), "stateful_trajectory", mode="train")


@pytest.mark.parametrize(("mutant", "family", "evidence"), [
    (MomentumOnNewPowerNorm, "powernorm", "running_phi"),
    (ReadsAfterUpdatePowerNorm, "powernorm", "step 3 output"),
    (FrozenGradientStatisticPowerNorm, "powernorm", "ema_gz"),
    (IgnoresOutliersUnifiedNorm, "unified", "outlier"),
    (WindowSlotOffByOneMABN, "mabn", "buffer_x2"),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_state_handling_mutants_are_flagged(mutant, family, evidence):
    outcome = assert_flags(seed(mutant.__name__, family, mutant), "stateful_trajectory", mode="train")
    assert evidence in outcome.summary, outcome.summary


@pytest.mark.parametrize("mutant", [MomentumOnNewPowerNorm, ReadsAfterUpdatePowerNorm,
                                    FrozenGradientStatisticPowerNorm], ids=lambda m: m.__name__)
def test_the_same_mutants_pass_a_single_forward(mutant):
    # Why the check exists: forward_equivalence sees one step (inside the warm-up) and cannot tell.
    assert_passes(seed(mutant.__name__, "powernorm", mutant), "forward_equivalence", mode="train")


def test_the_authors_pn_star_backward_is_not_the_papers_powernorm():
    assert_flags(seed("pn-star-as-pn", "powernorm", PowerNormStar), "stateful_trajectory", mode="train")
    assert_flags(seed("pn-as-pn-star", "powernorm_star", PowerNorm), "stateful_trajectory", mode="train")
