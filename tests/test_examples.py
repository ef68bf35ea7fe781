"""Every script in examples/ runs in its own process and prints what its docs page says it does.

The docs include these files verbatim (pymdownx snippets), so the code shown is the code tested.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


def _quickstart(out: str) -> None:
    # MLE of a linear flow on Gaussian data reaches the Gaussian's entropy (up to sampling).
    nll = _number(r"final nll (-?[\d.]+)", out)
    entropy = _number(r"true entropy (-?[\d.]+)", out)
    assert abs(nll - entropy) < 0.1, out


def _reverse_kl_banana(out: str) -> None:
    # The banana target is normalised: the importance-sampling log Z estimate should be ~0.
    log_z = _number(r"log Z (-?[\d.]+) \+-", out)
    assert abs(log_z) < 0.2, out
    assert _number(r"ESS/n (-?[\d.]+)", out) > 0.3, out


def _custom_layer(out: str) -> None:
    assert "check_transform: passed" in out, out
    fitted = _number(r"fitted (-?[\d.]+)", out)
    floor = _number(r"NLL of the true params (-?[\d.]+)", out)
    assert fitted < floor + 0.05, out


CHECKS = {
    "quickstart.py": _quickstart,
    "reverse_kl_banana.py": _reverse_kl_banana,
    "custom_layer.py": _custom_layer,
}


def test_every_example_is_checked():
    scripts = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert scripts == sorted(CHECKS), f"examples without a check: {set(scripts) - set(CHECKS)}"


def _run(args: list[str]) -> str:
    # The checkout's package first on the path, whatever is installed.
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CHECKS))
def test_example_runs(script):
    CHECKS[script](_run([os.path.join(EXAMPLES, script)]))


@pytest.mark.slow
def test_readme_example_runs():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 1, f"expected one python block in README.md, found {len(blocks)}"
    out = _run(["-c", blocks[0]])
    # MLE of this linear flow on Gaussian data reaches the Gaussian's entropy.
    nll = _number(r"NLL (-?[\d.]+)", out)
    entropy = _number(r"entropy (-?[\d.]+)", out)
    assert abs(nll - entropy) < 0.1, out
