"""Known failures through `pytest suite`: a forged name inherits nothing, a malformed file is one error item while
everything else is judged, a missing --known-failures path is a usage error, an unknown implementation is reported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# slow (`pytest tests -m slow`, .ci/run): every test starts `pytest suite` in a subprocess
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FORGED = "torch.nn.LayerNorm-weight_gradient_reduction-float16-evil"


def run_suite(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = [str(ROOT / "tests"), *([str(path)] if path else []), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(extra)}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([sys.executable, "-m", "pytest", "suite", "-p", "no:cacheprovider", "-q", "-rA",
                           "--no-record", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_a_forged_name_does_not_inherit_torchs_known_failures(tmp_path):
    # torch's own LayerNorm under a name whose test ids start with torch's known-failure ids: its float16
    # reduction item fails as torch's does. The name excuses nothing: torch.nn.LayerNorm's entry is not applied to
    # it; the failure is F.layer_norm's op's (it dispatches aten.native_layer_norm and passes with it in float64),
    # so it is said as inherited from that op (tests/test_inherited_failures.py).
    (tmp_path / "forged_plugin.py").write_text(textwrap.dedent(f"""\
        from torch import nn
        from normbench import Implementation

        def implementations():
            return [Implementation(name={FORGED!r}, family="layernorm",
                                   factory=lambda c, eps, affine: nn.LayerNorm(c, eps=eps,
                                                                               elementwise_affine=affine))]
        """))
    proc = run_suite("--impl-path", "forged_plugin:implementations", "--impl", FORGED,
                     "--impl", "torch.nn.LayerNorm", "-k", "weight_gradient_reduction-float16]", path=tmp_path)
    out = proc.stdout
    forged = f"XFAIL suite/conformance.py::layernorm[{FORGED}-weight_gradient_reduction-float16] - "
    assert forged + "inherited from torch F.layer_norm (aten.native_layer_norm): " in out, out[-3000:]
    assert "[torch.nn.LayerNorm.yaml]" not in out.split(forged, 1)[1].splitlines()[0]
    assert "XFAIL suite/conformance.py::layernorm[torch.nn.LayerNorm-weight_gradient_reduction-float16]" in out
    assert proc.returncode == 0


def test_a_malformed_file_is_one_error_item_and_the_rest_is_judged(tmp_path):
    (tmp_path / "bad.yaml").write_text("implementation: broken.nan_output\nknown_failures:\n"
                                       "  - {id: '', reason: silence everything}\n")
    (tmp_path / "good.yaml").write_text("implementation: broken.nan_output\nknown_failures:\n"
                                        "  - {id: 'layernorm[broken.nan_output-forward_equivalence', "
                                        "reason: returns NaN on purpose}\n")
    proc = run_suite("--known-failures", str(tmp_path), "--impl-path", "plugins.broken:nan_output",
                     "--impl", "broken.nan_output", "--impl", "torch.nn.LayerNorm",
                     "-k", "forward_equivalence-float32 or known_failures_error")
    out = proc.stdout
    assert "FAILED suite/conformance.py::known_failures_error[bad.yaml]" in out, out[-3000:]
    assert "bad.yaml: known_failures[0]: 'id' is empty" in out
    assert "XFAIL suite/conformance.py::layernorm[broken.nan_output-forward_equivalence-float32]" in out
    assert "PASSED suite/conformance.py::layernorm[torch.nn.LayerNorm-forward_equivalence-float32]" in out
    assert proc.returncode == 1


def test_a_missing_known_failures_path_is_a_usage_error(tmp_path):
    missing = tmp_path / "no_such_known_failures.yaml"
    proc = run_suite("--known-failures", str(missing), "--impl", "torch.nn.LayerNorm", "-k", "forward_equivalence")
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no_such_known_failures.yaml: no such known-failures file or directory" in proc.stdout + proc.stderr


def test_a_file_for_an_unknown_implementation_is_reported(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("implementation: torch.nn.LayerNrom\nknown_failures:\n"
                    "  - {id: 'layernorm[torch.nn.LayerNrom-forward_equivalence', reason: a typo}\n")
    proc = run_suite("--known-failures", str(typo), "--impl", "torch.nn.LayerNorm",
                     "-k", "forward_equivalence-float32")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "typo.yaml" in proc.stdout and "'torch.nn.LayerNrom'" in proc.stdout and "not installed" in proc.stdout
