"""Items of the export deployment judged in the trusted process: the build request names the deployment, the
plugin's side exports the module it built to ONNX and every forward of it runs in ONNX Runtime over there, while the
truth, the comparisons and the verdict are computed here. Each case gets the verdict and summary it gets beside the
plugin; export_ops' description of the graph crosses as plain data, checked for its shape."""

from __future__ import annotations

import pytest
from factories.sandbox_items import judged_items
from helpers import REMOTE_ENV, run
from plugins import export_mutants

from normbench.remote.judge import JUDGED_IN, trusted

pytestmark = pytest.mark.deploy  # ONNX Runtime: skipped, with the reason, without the deploy extra


@pytest.fixture(scope="module")
def judged():
    with judged_items("plugins.export_mutants:implementations", "export", "batchnorm", "export") as items:
        yield items


def test_the_export_deployment_is_trusted_with_its_own_checks():
    for check in ("forward_equivalence", "variant_matches_eager", "export_train_eval_semantics", "export_ops"):
        assert trusted(check, "export"), check
    assert not trusted("export_ops", "export", "cuda")


@pytest.mark.parametrize(("name", "check", "mode", "verdict"), [
    ("control", "export_train_eval_semantics", "any", "pass"),
    ("drops_stats", "export_train_eval_semantics", "any", "fail"),  # exported, eval uses the batch's statistics
    ("drops_stats", "forward_equivalence", "eval", "fail"),
    ("control", "export_ops", "any", "report"),
])
def test_an_export_item_is_judged_here_as_beside_the_plugin(judged, monkeypatch, name, check, mode, verdict):
    outcome = judged[name, check, mode]
    assert outcome.metrics[JUDGED_IN] == "trusted process"
    assert outcome.verdict == verdict, outcome.summary
    monkeypatch.delenv(REMOTE_ENV, raising=False)
    local = {i.name: i for i in export_mutants.implementations()}[f"export.{name}"]
    beside = run(local, check, mode=None if mode == "any" else mode, variant="export")
    assert (beside.verdict, beside.summary) == (outcome.verdict, outcome.summary)
    if check == "export_ops":
        assert outcome.metrics["onnx_ops"] == beside.metrics["onnx_ops"] and outcome.metrics["onnx_ops"]


def test_a_forged_description_of_the_graph_is_a_protocol_error(judged):
    outcome = judged["forges_its_graph", "export_ops", "any"]
    assert outcome.verdict == "error", outcome.summary
    assert "exported_graph reply" in outcome.summary
