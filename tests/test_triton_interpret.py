"""--triton-interpret: Triton kernels judged on CPU through Triton's interpreter, and one explained
skip for a kernel (or a library) the interpreter cannot run. The runs need triton (`pip install -e '.[triton]'`) and
skip without it; the interpreter is slow, so each run judges a handful of items."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories.suite_runs import run_suite

from normbench.triton_interpret import import_failure_reason, interpreter_failure

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "normbench_triton_example:implementations"
NEEDS_TRITON = "needs triton for the --triton-interpret runs: pip install -e '.[triton]'"


@pytest.fixture
def triton_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """triton installed, and the example plugin (examples/triton_plugin) importable by the suite's processes."""
    pytest.importorskip("triton", reason=NEEDS_TRITON)
    src = str(ROOT / "examples" / "triton_plugin" / "src")
    monkeypatch.setenv("PYTHONPATH", src + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _raise_in(folder: Path, filename: str, message: str) -> BaseException:
    """An exception raised from code whose file lies in `folder` (a stand-in for Triton's package), called from here
    as a plugin's forward would launch a kernel."""
    path = folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"def launch():\n    raise RuntimeError({message!r})\n")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    try:
        namespace["launch"]()  # the plugin's launch line
    except RuntimeError as exc:
        return exc
    raise AssertionError("did not raise")


def test_an_exception_from_tritons_frames_is_the_interpreters_and_names_the_launch(tmp_path):
    folder = tmp_path / "triton"
    exc = _raise_in(folder, "runtime/driver.py", "0 active drivers ([]). There should only be one.")
    why = interpreter_failure(exc, folder=folder.resolve())
    assert why is not None and "RuntimeError: 0 active drivers" in why
    assert "launched at test_triton_interpret.py" in why and "namespace[\"launch\"]()" in why


def test_an_exception_of_the_plugins_own_code_is_not_the_interpreters(tmp_path):
    folder = tmp_path / "triton"
    folder.mkdir()
    exc = _raise_in(tmp_path / "plugin", "kernels.py", "shape mismatch")
    assert interpreter_failure(exc, folder=folder.resolve()) is None
    try:
        raise ValueError("wrong")
    except ValueError as own:
        assert interpreter_failure(own, folder=folder.resolve()) is None


def test_an_import_that_fails_in_tritons_frames_is_named_and_another_is_not(tmp_path):
    folder = (tmp_path / "triton").resolve()
    inside = (f'Traceback (most recent call last):\n  File "/plugins/gems.py", line 3, in <module>\n'
              f'  File "{folder}/runtime/driver.py", line 20, in _create_driver\n'
              "RuntimeError: 0 active drivers ([]). There should only be one.\n")
    why = import_failure_reason(inside, "importing 'gems' raised RuntimeError: 0 active drivers", folder=folder)
    assert why is not None and "cannot import it: importing 'gems' raised RuntimeError: 0 active drivers" in why
    outside = 'Traceback (most recent call last):\n  File "/plugins/gems.py", line 3\nImportError: no module x\n'
    assert import_failure_reason(outside, "importing 'gems' raised ImportError", folder=folder) is None


def test_a_kernel_decorated_after_the_variable_is_set_is_interpreted_though_triton_was_imported_first(tmp_path):
    # why the forkserver may import triton (Inductor, under --variant compile) and the children still interpret:
    # @triton.jit reads TRITON_INTERPRET when it decorates, not when triton is imported
    pytest.importorskip("triton", reason=NEEDS_TRITON)
    script = tmp_path / "decorate.py"  # @triton.jit needs a source file
    script.write_text("import os, triton\n"
                      "from triton.runtime.interpreter import InterpretedFunction\n"
                      "os.environ.pop('TRITON_INTERPRET', None)\n"
                      "@triton.jit\ndef before(X):\n    pass\n"
                      "os.environ['TRITON_INTERPRET'] = '1'\n"
                      "@triton.jit\ndef after(X):\n    pass\n"
                      "print(isinstance(before, InterpretedFunction), isinstance(after, InterpretedFunction))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]


def test_a_scalar_where_the_kernel_loads_a_tensor_is_the_interpreters_failure_naming_the_kernel(tmp_path):
    # Liger's case in the issue: eps arrives as a Python float where the kernel does tl.load(eps)
    pytest.importorskip("triton", reason=NEEDS_TRITON)
    script = tmp_path / "scalar_eps.py"
    script.write_text("import os\nos.environ['TRITON_INTERPRET'] = '1'\n"
                      "import torch, triton, triton.language as tl\n"
                      "from normbench.triton_interpret import interpreter_failure\n"
                      "@triton.jit\ndef scale(X, Y, eps, BLOCK: tl.constexpr):\n"
                      "    cols = tl.arange(0, BLOCK)\n"
                      "    tl.store(Y + cols, tl.load(X + cols) * tl.load(eps))\n"
                      "x = torch.ones(8)\n"
                      "try:\n    scale[(1,)](x, torch.empty_like(x), 1e-5, BLOCK=8)\n"
                      "except Exception as exc:\n    print(interpreter_failure(exc))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("kernel 'scale' (launched at scalar_eps.py:"), out.stdout + out.stderr[-2000:]
    assert "no attribute" in out.stdout and "at scalar_eps.py:8 in scale" in out.stdout, out.stdout


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the example is judged on the GPU")
def test_without_the_option_a_triton_plugin_on_a_cpu_machine_is_one_cuda_only_skip(triton_example, tmp_path):
    proc = run_suite("--results-dir", str(tmp_path), "--no-entry-points", "--impl-path", EXAMPLE,
                     "--impl", "triton_example.RMSNorm")
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert "devices: declares cuda only; this machine has no CUDA device" in out and "1 skipped in" in out
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    assert [o["verdict"] for o in record["outcomes"].values()] == ["skip"]
    assert "rmsnorm[triton_example.RMSNorm-devices]" in record["outcomes"]


@pytest.mark.slow
def test_the_example_kernels_are_judged_on_cpu_through_the_interpreter(triton_example, tmp_path):
    proc = run_suite("--results-dir", str(tmp_path), "--triton-interpret", "--no-entry-points", "--impl-path", EXAMPLE,
                     "-k", "forward_equivalence-float32 or gradient_equivalence-float32 or "
                           "RMSNorm-forward_equivalence-bfloat16")
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:]
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    outcomes = {tid: o for tid, o in record["outcomes"].items() if o["verdict"] != "unjudged"}
    float32 = ["layernorm[triton_example.LayerNorm-forward_equivalence-float32]",
               "layernorm[triton_example.LayerNorm-gradient_equivalence-float32]",
               "rmsnorm[triton_example.RMSNorm-forward_equivalence-float32]",
               "rmsnorm[triton_example.RMSNorm-gradient_equivalence-float32]"]
    assert [outcomes[tid]["verdict"] for tid in float32] == ["pass"] * 4, out[-3000:]
    assert {outcomes[tid]["device"] for tid in float32} == {"cpu"}  # declared cuda only, judged on CPU here
    # bfloat16: judged where this triton's interpreter rounds as a GPU does, else one skip per item saying why
    bf16 = outcomes["rmsnorm[triton_example.RMSNorm-forward_equivalence-bfloat16]"]
    assert bf16["verdict"] == "pass" or (bf16["verdict"] == "skip" and "emulates bfloat16" in bf16["summary"]), bf16


@pytest.mark.slow
def test_a_wrong_kernel_fails_and_one_the_interpreter_cannot_run_is_one_explained_skip(triton_example, tmp_path):
    proc = run_suite("--results-dir", str(tmp_path), "--triton-interpret", "--no-entry-points",
                     "--impl-path", "plugins.triton_kernels:no_mean", "--impl-path", "plugins.triton_kernels:autotuned",
                     "--impl-path", "plugins.triton_needs_device:implementations",
                     "-k", "forward_equivalence or triton_interpreter or plugin_unavailable")
    out = proc.stdout
    assert proc.returncode == 1, out[-4000:]
    assert "1 failed, 2 skipped" in out, out[-3000:]
    record = json.loads(next((tmp_path / "raw").glob("*/conformance.json")).read_text())
    outcomes = record["outcomes"]
    # the kernel that forgets the mean: judged, and caught
    wrong = outcomes["layernorm[triton_mutant.NoMeanLayerNorm-forward_equivalence-float32]"]
    assert wrong["verdict"] == "fail" and "forward output out of tolerance" in wrong["summary"]
    # the autotuned kernel: one skip naming the kernel, where it was launched and the error; nothing else planned
    autotuned = {tid: o for tid, o in outcomes.items() if o["implementation"] == "triton_mutant.AutotunedRMSNorm"}
    assert list(autotuned) == ["rmsnorm[triton_mutant.AutotunedRMSNorm-triton_interpreter]"]
    skip = autotuned["rmsnorm[triton_mutant.AutotunedRMSNorm-triton_interpreter]"]
    assert skip["verdict"] == "skip" and "kernel '_autotuned_rms_norm_fwd'" in skip["summary"]
    assert "launched at triton_kernels.py" in skip["summary"] and "0 active drivers" in skip["summary"]
    assert record["implementations"]["triton_mutant.AutotunedRMSNorm"]["skipped"] == 1
    # the library that will not import without a device: one skipped entry of its source, not a broken plugin
    assert not record["errors"], record["errors"]
    (unavailable,) = record["unavailable"].values()
    assert "cannot import it:" in unavailable and "raised RuntimeError: 0 active drivers" in unavailable, unavailable
