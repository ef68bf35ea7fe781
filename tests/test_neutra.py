"""fl.interop.neutra: the target pulled back through g, for HMC/NUTS in the base space.

With a flow that maps N(0, I) exactly onto a Gaussian target (g(u) = m + L u, L the Cholesky
factor of the covariance), the pulled-back density is exactly log N(u; 0, I) + the target's
log normaliser offset.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax_lab as fl
from flowjax_lab import transforms as T

MEAN = jnp.array([1.0, -2.0, 0.5])
COV = jnp.array([[2.0, 0.9, 0.3], [0.9, 1.0, -0.2], [0.3, -0.2, 0.5]])
OFFSET = 3.7  # the target is unnormalised by this constant


def _target(x):
    return fl.targets.gaussian_target(MEAN, COV).log_prob(x) + OFFSET


def _exact_flow():
    """f(x) = L^-1 (x - m) (affine shift m, then the lower-triangular L^-1); g(u) = m + L u."""
    flow = fl.make_flow(fl.chain(T.affine(), T.triangular()), event_shape=(3,))
    params = flow.init(jax.random.key(0))
    inv_l = jnp.linalg.inv(jnp.linalg.cholesky(COV))
    affine = {"shift": MEAN, "log_scale": jnp.zeros(3)}
    tri = {"off_diagonal": jnp.tril(inv_l, -1), "log_diag": jnp.log(jnp.diag(inv_l))}
    assert jax.tree.structure(params) == jax.tree.structure((affine, tri))
    return flow, (affine, tri)


def test_pulled_back_density_of_an_exact_flow_is_standard_normal():
    flow, params = _exact_flow()
    nt = fl.interop.neutra(flow, params, _target)
    u = jax.random.normal(jax.random.key(1), (6, 3)) * 1.5
    got = jax.vmap(nt.log_density_in_base_space)(u)
    expected = -0.5 * jnp.sum(u**2, axis=1) - 1.5 * math.log(2 * math.pi) + OFFSET
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    x = jax.vmap(nt.to_data)(u)
    np.testing.assert_allclose(x, MEAN + u @ jnp.linalg.cholesky(COV).T, rtol=1e-5, atol=1e-5)
    # its gradient is -u (what the sampler sees: an isotropic Gaussian)
    grad = jax.vmap(jax.grad(nt.log_density_in_base_space))(u)
    np.testing.assert_allclose(grad, -u, rtol=1e-4, atol=1e-4)


def test_neutra_takes_a_target_object_and_checks_inputs():
    flow, params = _exact_flow()
    target = fl.targets.gaussian_target(MEAN, COV)
    nt = fl.interop.neutra(flow, params, target)
    np.testing.assert_allclose(nt.log_density_in_base_space(jnp.zeros(3)),
                               -1.5 * math.log(2 * math.pi), rtol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="one base-space event of shape"):
        nt.log_density_in_base_space(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="target_log_prob"):
        fl.interop.neutra(flow, params, 3.0)
    cond = fl.models.maf(2, 1, (8,), context_dim=2)
    with pytest.raises(ValueError, match="conditional.*context"):
        fl.interop.neutra(cond, cond.init(jax.random.key(0)), lambda x: -jnp.sum(x**2))
    c = jnp.array([0.3, -0.1])
    nt_c = fl.interop.neutra(cond, cond.init(jax.random.key(0)), lambda x: -jnp.sum(x**2), c)
    assert np.isfinite(float(nt_c.log_density_in_base_space(jnp.ones(2))))


def test_blackjax_nuts_in_base_space():
    blackjax = pytest.importorskip("blackjax")
    flow, params = _exact_flow()
    nt = fl.interop.neutra(flow, params, _target)
    warmup = blackjax.window_adaptation(blackjax.nuts, nt.log_density_in_base_space)
    k_warm, k_run = jax.random.split(jax.random.key(0))
    (state, tuned), _ = warmup.run(k_warm, jnp.zeros(3), num_steps=200)
    kernel = blackjax.nuts(nt.log_density_in_base_space, **tuned).step

    def one(state, key):
        state, info = kernel(key, state)
        return state, (state.position, info.is_divergent)

    _, (u, divergent) = jax.lax.scan(one, state, jax.random.split(k_run, 1000))
    x = jax.vmap(nt.to_data)(u)
    assert int(divergent.sum()) == 0
    # 1000 NUTS draws of an isotropic Gaussian are nearly independent: SE of a mean ~ sd/31
    sd = jnp.sqrt(jnp.diag(COV))
    np.testing.assert_allclose(x.mean(0), MEAN, atol=float(0.15 * sd.max()))
    np.testing.assert_allclose(jnp.cov(x.T), COV, atol=0.25)
    # the adapted step size is near NUTS's for N(0, I) in 3-D (~1), not a funnel's tiny one
    assert float(tuned["step_size"]) > 0.5
