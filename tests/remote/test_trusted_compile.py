"""Items of the compile deployment judged in the trusted process: the build request names the deployment, the
plugin's side wraps the module it built with torch.compile (normbench.deploy.compile) and every forward and backward
of it runs compiled over there, while the truth, the comparisons and the verdict are computed here. Each case gets
the verdict and summary it gets beside the plugin; what the protocol does not carry (no_recompile_storm's count of
Inductor's graphs) is still judged beside it and says so."""

from __future__ import annotations

import pytest
from factories.sandbox_items import judged_items
from helpers import REMOTE_ENV, run
from plugins import compile_mutants

from normbench.remote.judge import JUDGED_IN, trusted

# slow (`pytest tests -m slow`, .ci/run): the module's items compile with Inductor, cold, in judging processes of their
# own (their caches are per process: normbench.judge_user), and beside them here: 95 s of the fast loop's 230
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judged():
    with judged_items("plugins.compile_mutants:implementations", "compile", "layernorm", "compile") as items:
        yield items


def _beside(name: str, check: str, monkeypatch: pytest.MonkeyPatch):
    """The same item judged in this process, beside the module, as every compile item was before."""
    monkeypatch.delenv(REMOTE_ENV, raising=False)
    local = {i.name: i for i in compile_mutants.implementations()}[f"compile.{name}"]
    return run(local, check, variant="compile")


def test_the_compile_deployment_is_trusted_but_its_graph_count_is_not():  # export: test_trusted_export
    assert trusted("variant_matches_eager", "compile") and trusted("forward_equivalence", "compile")
    assert not trusted("no_recompile_storm", "compile")
    assert not trusted("forward_equivalence", "compile", "cuda")


@pytest.mark.parametrize(("name", "check", "verdict"), [
    ("control", "variant_matches_eager", "pass"),
    ("sloppy", "variant_matches_eager", "fail"),  # compiled, it diverges from eager: caught over the protocol
    ("sloppy", "forward_equivalence", "fail"),
    ("compiler_fails", "forward_equivalence", "skip"),  # torch.compile unavailable for it: one explained skip
])
def test_a_compile_item_is_judged_here_as_beside_the_plugin(judged, monkeypatch, name, check, verdict):
    outcome = judged[name, check, "any"]
    assert outcome.metrics[JUDGED_IN] == "trusted process"
    assert outcome.verdict == verdict, outcome.summary
    beside = _beside(name, check, monkeypatch)
    assert (beside.verdict, beside.summary) == (outcome.verdict, outcome.summary)


def test_what_the_protocol_does_not_carry_is_judged_beside_the_plugin(judged):
    outcome = judged["recompiles", "no_recompile_storm", "any"]
    assert outcome.metrics[JUDGED_IN] == "plugin process"
    assert outcome.verdict == "fail", outcome.summary
