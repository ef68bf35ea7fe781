"""fl.transforms.cnf in float64 (run in its own process by test_cnf.py): the augmented ODE's
log-det against slogdet(jacfwd) of the solved map, the round trip, Hutchinson's estimator's mean,
and reverse-mode against backsolve gradients, at tight solver tolerances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax_lab as fl

T = fl.transforms
TOL = 1e-12  # solver rtol = atol


@pytest.fixture(autouse=True)
def _x64():
    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"


def _params(t, dim, scale=1.0, context_dim=0):
    p = t.init(jax.random.key(0), jnp.zeros(dim))
    return fl.testing.randomize_params(jax.random.key(1), p, scale)


@pytest.mark.parametrize("context_dim", [0, 2])
def test_exact_logdet_matches_jacobian_and_inverse_returns_x(context_dim):
    t = T.cnf((8,), context_dim=context_dim, rtol=TOL, atol=TOL, adjoint="direct")
    p = _params(t, 3)
    x = jnp.array([0.4, -1.1, 0.7])
    c = jnp.array([0.5, -0.3]) if context_dim else None

    @jax.jit
    def run(p, x, c):
        z, ld = t.apply(p, x, context=c)
        jac = jax.jacfwd(lambda v: t.apply(p, v, context=c)[0])(x)
        x_back, ld_back = t.inverse(p, z, context=c)
        jac_inv = jax.jacfwd(lambda v: t.inverse(p, v, context=c)[0])(z)
        other = t.apply(p, x, context=None if c is None else -c)[0]
        return z, ld, jac, x_back, ld_back, jac_inv, other

    z, ld, jac, x_back, ld_back, jac_inv, other = run(p, x, c)
    assert abs(float(ld)) > 0.1  # a map far from volume-preserving
    np.testing.assert_allclose(ld, jnp.linalg.slogdet(jac)[1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(x_back, x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ld_back, -ld, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ld_back, jnp.linalg.slogdet(jac_inv)[1], rtol=0, atol=1e-9)
    if context_dim:  # the context changes the map
        assert float(jnp.max(jnp.abs(other - z))) > 1e-3


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_logdet_is_unbiased(probe):
    exact = T.cnf((8,), rtol=1e-9, atol=1e-9)
    hutch = T.cnf((8,), trace="hutchinson", probe=probe, rtol=1e-9, atol=1e-9)
    p = _params(exact, 3)
    x = jnp.array([0.4, -1.1, 0.7])
    keys = jax.random.split(jax.random.key(5), 2000)

    @jax.jit
    def run(p, x):
        z, ld = exact.apply(p, x)
        zs, lds = jax.vmap(lambda k: hutch.apply(p, x, key=k))(keys)
        back = hutch.inverse(p, zs[0], key=keys[0])
        return z, ld, zs, lds, back

    z, ld, zs, lds, (x_back, ld_back) = run(p, x)
    np.testing.assert_allclose(zs, jnp.broadcast_to(z, zs.shape), atol=1e-7)  # same path
    mean, se = float(jnp.mean(lds)), float(jnp.std(lds) / np.sqrt(len(keys)))
    assert se > 1e-3  # the estimator does vary
    assert abs(mean - float(ld)) < 4 * se, (mean, se, float(ld))
    # the same key in both directions: the estimate is undone by the inverse
    np.testing.assert_allclose(x_back, x, atol=1e-7)
    np.testing.assert_allclose(ld_back, -lds[0], atol=1e-7)


def test_backsolve_gradients_match_reverse_mode():
    xs = jnp.array([[0.4, -1.1, 0.7], [-0.2, 0.3, 1.5]])
    grads = {}
    for adjoint in ("recursive_checkpoint", "backsolve"):
        t = T.cnf((8,), rtol=1e-10, atol=1e-10, adjoint=adjoint)
        p = _params(t, 3)

        def loss(p, t=t):
            z, ld = jax.vmap(lambda x: t.apply(p, x))(xs)
            return jnp.sum(ld) + jnp.sum(jnp.sin(z))

        grads[adjoint] = jax.jit(jax.grad(loss))(p)
    a = jax.tree.leaves(grads["recursive_checkpoint"])
    b = jax.tree.leaves(grads["backsolve"])
    assert max(float(jnp.max(jnp.abs(u))) for u in a) > 0.1
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
