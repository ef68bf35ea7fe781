"""Float64 conformance; run in its own process with JAX_ENABLE_X64=1 (see test_conformance)."""

import jax
import jax.numpy as jnp
import pytest

import flowjax_lab as fl
from registry import CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance_float64(name):
    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
    case = CASES[name]
    x = jnp.zeros(case.event_shape, jnp.float64)
    tol = case.tol64
    fl.testing.check_transform(
        case.make(),
        x,
        key=jax.random.key(7),
        atol=tol,
        rtol=tol,
        context_dim=case.context_dim,
        sample_x=case.sample_x,
        sample_z=case.sample_z,
    )
    params = case.make().init(jax.random.key(0), x)
    for leaf in jax.tree.leaves(params):  # no silent down-casting of params
        assert leaf.dtype in (jnp.float64, jnp.int64, jnp.int32), (name, leaf.dtype)
