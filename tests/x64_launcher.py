"""One launcher for the float64 tests: x64 mode is process-wide, so they run in a fresh pytest."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_pytest_in_float64(target: str, *args: str, passed: int | None = None,
                          env: dict | None = None) -> str:
    """Run ``pytest -x target *args`` from tests/ with JAX_ENABLE_X64=1 (and ``env``); assert it
    succeeded and that ``passed`` tests passed (None: at least one, none failed). Returns stdout."""  # fmt: skip
    path = os.pathsep.join([HERE, os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])
    full_env = {**os.environ, "JAX_ENABLE_X64": "1", "PYTHONPATH": path, **(env or {})}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", target, *args]
    out = subprocess.run(cmd, env=full_env, capture_output=True, text=True, cwd=HERE)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    if passed is None:
        assert " passed" in out.stdout and "failed" not in out.stdout, out.stdout[-2000:]
    else:
        assert f"{passed} passed" in out.stdout, out.stdout[-2000:]
    return out.stdout
