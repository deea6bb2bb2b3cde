"""The self-tests import helpers from this folder. A test that needs the `deploy` extra (the export variant,
the onnxruntime benchmark variant) is marked `@pytest.mark.deploy`: without the extra it skips with the reason."""

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from factories.xdist_groups import mark_groups, tell_worker, use_loadgroup  # noqa: E402  (tests/ is importable from here on)

#: what `pip install ".[deploy]"` adds: torch.onnx.export(dynamo=True) needs onnx and onnxscript, and the exported
#: graph runs in ONNX Runtime
DEPLOY_MODULES = ("onnx", "onnxscript", "onnxruntime")


def missing_modules(names: tuple[str, ...]) -> list[str]:
    """The top-level modules of `names` that cannot be imported here (found without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses the name, or None in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def pytest_configure(config):
    # a module-scoped suite run is set up once per worker that runs a test reading it: keep those tests together
    use_loadgroup(config)
    config.addinivalue_line("markers", "deploy: needs the deploy extra (onnx, onnxscript, onnxruntime); skipped "
                                       "with the reason when it is not installed")


@pytest.hookimpl(optionalhook=True)  # an xdist hook: without xdist, never called
def pytest_configure_node(node):
    tell_worker(node)


@pytest.hookimpl(tryfirst=True)  # a worker reports the node ids, suffixed with their groups, once collected
def pytest_collection_modifyitems(config, items):
    mark_groups(config, items)
    marked = [item for item in items if item.get_closest_marker("deploy")]
    missing = missing_modules(DEPLOY_MODULES) if marked else []
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs the deploy extra: {', '.join(missing)} not installed "
                                   "(python -m pip install -c constraints.txt -e \".[dev,deploy]\")")
    for item in marked:
        item.add_marker(skip)
