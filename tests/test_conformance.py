"""One generic check over every registered transform and model, in float32 here and float64 in
subprocesses (x64 mode is process-wide)."""

import jax
import jax.numpy as jnp
import pytest

import flowjax_lab as fl
from registry import CASES, FAST_COMPILE, MODEL_CASES
from x64_launcher import run_pytest_in_float64


def _params(cases: dict) -> list:
    """The case names, the ``slow`` ones marked (they run with ``-m slow``)."""
    return [pytest.param(n, marks=pytest.mark.slow) if cases[n].slow else n for n in sorted(cases)]


@pytest.mark.parametrize("name", _params(CASES))
def test_conformance_float32(name):
    case = CASES[name]
    x = jnp.zeros(case.event_shape, jnp.float32)
    fl.testing.check_transform(
        case.make(),
        x,
        key=jax.random.key(3),
        atol=case.tol32,
        rtol=case.tol32,
        context_dim=case.context_dim,
        param_scales=case.scales32,
        sample_x=case.sample_x,
        sample_z=case.sample_z,
        compiler_options=FAST_COMPILE,
    )


@pytest.mark.parametrize("name", _params(MODEL_CASES))
def test_model_conformance_float32(name):
    case = MODEL_CASES[name]
    fl.testing.check_flow(
        case.make(),
        key=jax.random.key(3),
        atol=case.tol32,
        rtol=case.tol32,
        context_dim=case.context_dim,
        param_scales=case.scales32,
        sample_x=case.sample_x,
        compiler_options=FAST_COMPILE,
    )


LAYER_SHARDS, MODEL_SHARDS = 2, 2


def _x64_conformance(test: str, shard: int, shards: int, cases: dict) -> None:
    """Run x64_conformance.py's ``test`` on every ``shards``-th case from ``shard`` in a fresh
    process with JAX_ENABLE_X64=1, and check that each of those cases ran and passed."""
    names = sorted(cases)[shard::shards]
    run_pytest_in_float64(f"x64_conformance.py::{test}", passed=len(names),
                          env={"CONFORMANCE_SHARD": f"{shard}/{shards}"})  # fmt: skip


@pytest.mark.slow  # each shard a subprocess of several minutes: with -m slow, as the models (CI runs both)
@pytest.mark.parametrize("shard", range(LAYER_SHARDS))
def test_conformance_float64_in_own_process(shard):
    _x64_conformance("test_conformance_float64", shard, LAYER_SHARDS, CASES)


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(MODEL_SHARDS))
def test_model_conformance_float64_in_own_process(shard):
    _x64_conformance("test_model_conformance_float64", shard, MODEL_SHARDS, MODEL_CASES)


def test_registry_covers_all_factories():
    covered = {case.factory for case in CASES.values()}
    missing = set(fl.transforms.__all__) - covered - set(fl.transforms.NOT_FACTORIES)
    assert not missing, f"public factories without a conformance case: {sorted(missing)}"
    for combinator in ("chain", "stack", "invert"):
        assert combinator in covered
    models = {case.factory for case in MODEL_CASES.values()}
    missing = set(fl.models.__all__) - models
    assert not missing, f"public models without a conformance case: {sorted(missing)}"


def _broken_logdet():
    t = fl.transforms.affine()
    return fl.Transform(
        t.init, lambda p, x, context=None: (t.apply(p, x)[0], 0.0 * x.sum()), t.inverse
    )


def _broken_inverse():
    t = fl.transforms.lu_linear()
    return fl.Transform(t.init, t.apply, lambda p, z, context=None: (z, jnp.zeros((), z.dtype)))


@pytest.mark.parametrize(
    "make, message",
    [(_broken_logdet, "log-det"), (_broken_inverse, "inverse\\(apply\\(x\\)\\) == x")],
)
def test_checker_catches_broken_transforms(make, message):
    with pytest.raises(AssertionError, match=message):
        fl.testing.check_transform(make(), jnp.zeros(3), key=jax.random.key(0))
