import os

import numpy as np
import pytest
import torch

# Small in-process tensors: one thread avoids OpenMP overhead (and oversubscription when
# subprocess tests or other jobs share the two cores).
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def device():
    """CPU unless REID_TEST_DEVICE names another (e.g. cuda)."""
    return torch.device(os.environ.get("REID_TEST_DEVICE", "cpu"))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TOOLS = {}
_SCRATCH = []


def _scratch() -> str:
    """An empty working folder for in-process tool runs, one per test session, outside the checkout."""
    if not _SCRATCH:
        import tempfile

        _SCRATCH.append(tempfile.mkdtemp(prefix="reid_htg_tools_"))
    return _SCRATCH[0]


def run_tool_here(tool: str, *args, check: bool = True):
    """Run ``tools/<tool>`` in this process (its ``main`` under ``reid_htg.cli.run_tool``, as on the command line),
    capturing stdout and stderr; a CompletedProcess like ``subprocess.run``'s.

    In-process saves the 5-10 s that every fresh interpreter spends importing
    torch and timm; tests that need a real process (kill -9, DDP, a server)
    still start one. The tool runs in a scratch working folder of its own, never
    the checkout: its relative defaults (``runs/``, ``data/synthetic``) must not
    meet, or leave behind, a user's runs.
    """
    import contextlib
    import importlib.util
    import io
    import subprocess
    import sys

    from reid_htg.cli import run_tool

    if tool not in _TOOLS:
        spec = importlib.util.spec_from_file_location(f"_tool_{tool[:-3]}", os.path.join(ROOT, "tools", tool))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TOOLS[tool] = module
    out, err = io.StringIO(), io.StringIO()
    argv, cwd, threads = sys.argv, os.getcwd(), torch.get_num_threads()
    sys.argv = [tool, *map(str, args)]
    try:
        os.chdir(_scratch())
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run_tool(_TOOLS[tool].main)
            except SystemExit as exc:  # argparse and friends
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        os.chdir(cwd)
        torch.set_num_threads(threads)
    res = subprocess.CompletedProcess([tool, *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{tool} failed ({code}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res
