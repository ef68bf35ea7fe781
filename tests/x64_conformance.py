"""Float64 conformance; run in its own process with JAX_ENABLE_X64=1 (see test_conformance).

``CONFORMANCE_SHARD=i/n`` runs every n-th case from the i-th (the parent test runs n shards in
parallel processes under xdist).
"""

import os

import jax
import jax.numpy as jnp
import pytest

import flowjax_lab as fl
from registry import CASES, FAST_COMPILE, MODEL_CASES


def shard(names):
    index, count = (int(v) for v in os.environ.get("CONFORMANCE_SHARD", "0/1").split("/"))
    return sorted(names)[index::count]


@pytest.mark.parametrize("name", shard(CASES))
def test_conformance_float64(name):
    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
    case = CASES[name]
    x = jnp.zeros(case.event_shape, jnp.float64)
    fl.testing.check_transform(
        case.make(),
        x,
        key=jax.random.key(7),
        atol=case.tol64,
        rtol=case.tol64,
        context_dim=case.context_dim,
        param_scales=case.scales64,
        sample_x=case.sample_x,
        sample_z=case.sample_z,
        compiler_options=FAST_COMPILE,
    )
    params = case.make().init(jax.random.key(0), x)
    for leaf in jax.tree.leaves(params):  # no silent down-casting of params
        assert leaf.dtype in (jnp.float64, jnp.int64, jnp.int32), (name, leaf.dtype)


@pytest.mark.parametrize("name", shard(MODEL_CASES))
def test_model_conformance_float64(name):
    case = MODEL_CASES[name]
    fl.testing.check_flow(
        case.make(),
        key=jax.random.key(7),
        dtype=jnp.float64,
        atol=case.tol64,
        rtol=case.tol64,
        context_dim=case.context_dim,
        param_scales=case.scales64,
        sample_x=case.sample_x,
        compiler_options=FAST_COMPILE,
    )
