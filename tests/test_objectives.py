"""Objectives and diagnostics against analytic values."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import flowjax_lab as fl
from flowjax_lab import objectives as obj

T = fl.transforms


def _random_linear_flow(key, dim=2):
    flow = fl.make_flow(
        fl.chain(T.lu_linear(), T.affine(), T.random_permutation(), T.triangular()),
        event_shape=(dim,),
    )
    params = fl.testing.randomize_params(key, flow.init(jax.random.key(0)), scale=0.4)
    return flow, params


@pytest.mark.parametrize("stl", [False, True])
def test_reverse_kl_is_minus_log_z_when_flow_equals_target(stl):
    flow, params = _random_linear_flow(jax.random.key(1))
    log_z = 1.7  # target = Z * (the flow's own density)
    target = lambda x: flow.log_prob(params, x) + log_z  # noqa: E731
    loss = jax.jit(obj.reverse_kl(flow, target, stick_the_landing=stl), static_argnums=2)
    value = loss(params, jax.random.key(2), 512)
    np.testing.assert_allclose(value, -log_z, atol=1e-5)
    # legacy keys work, and the normalised target gives exactly 0
    normalised = jax.jit(
        obj.reverse_kl(flow, lambda x: flow.log_prob(params, x), stl), static_argnums=2
    )
    np.testing.assert_allclose(normalised(params, jax.random.PRNGKey(3), 64), 0.0, atol=1e-5)


def test_stick_the_landing_gradient_vanishes_at_the_optimum():
    flow, params = _random_linear_flow(jax.random.key(4))
    target = lambda x: flow.log_prob(params, x) - 0.3  # noqa: E731
    key = jax.random.key(5)
    trainable, fixed = fl.partition(params)  # integer permutation leaves get no gradient

    def grad(stl):
        loss = obj.reverse_kl(flow, target, stick_the_landing=stl)
        return jax.jit(jax.grad(lambda tr: loss(fl.combine(tr, fixed), key, 64)))(trainable)

    plain, stl = grad(False), grad(True)
    plain_norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(plain))))
    stl_norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(stl))))
    assert stl_norm < 1e-4, stl_norm  # zero-variance gradient when q = pi / Z
    assert plain_norm > 1e-2, plain_norm  # the score term is only zero in expectation


def test_forward_kl_at_the_gaussian_mle_is_the_empirical_entropy():
    # f(x) = L^-1 (x - mu) with Sigma = L L^T is the MLE of the Gaussian family, which
    # chain(affine, triangular) represents exactly: NLL = entropy of N(mu_hat, Sigma_hat), grad = 0.
    x = jax.random.multivariate_normal(
        jax.random.key(6),
        jnp.array([1.0, -2.0, 0.5]),
        jnp.array([[2.0, 0.6, 0.1], [0.6, 1.0, -0.3], [0.1, -0.3, 0.5]]),
        (5000,),
    )
    x64 = np.asarray(x, np.float64)
    mu, cov = x64.mean(0), np.cov(x64.T, bias=True)
    inv = np.linalg.inv(np.linalg.cholesky(cov))
    flow = fl.make_flow(fl.chain(T.affine(), T.triangular(lower=True)), event_shape=(3,))
    params = flow.init(jax.random.key(0))
    params = (
        {"shift": jnp.asarray(mu, jnp.float32), "log_scale": params[0]["log_scale"]},
        {
            "off_diagonal": jnp.asarray(np.tril(inv, -1), jnp.float32),
            "log_diag": jnp.asarray(np.log(np.diag(inv)), jnp.float32),
        },
    )
    loss = obj.forward_kl(flow)
    entropy = 0.5 * (3 * (math.log(2 * math.pi) + 1) + np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(jax.jit(loss)(params, x), entropy, atol=2e-5)
    grads = jax.jit(jax.grad(loss))(params, x)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) < 2e-3


def test_is_diagnostics_are_exact_when_the_flow_is_the_target():
    flow, params = _random_linear_flow(jax.random.key(7))
    target = lambda x: flow.log_prob(params, x) + 2.5  # noqa: E731
    diag = jax.jit(obj.importance_diagnostics, static_argnums=(0, 1, 4))
    d = diag(flow, target, params, jax.random.key(8), 4096)
    np.testing.assert_allclose([d.elbo, d.log_z, d.ess], [2.5, 2.5, 1.0], atol=1e-5)
    assert float(d.log_z_se) < 1e-3


def test_is_diagnostics_match_gaussian_closed_forms():
    # q = N(0, I_2) (identity flow), pi = exp(-|x|^2 / (2 s^2)) with Z = 2 pi s^2.
    s, n = 1.2, 400_000
    flow = fl.make_flow(T.affine(), event_shape=(2,))
    params = flow.init(jax.random.key(0))
    target = lambda x: -0.5 * jnp.sum(x**2) / s**2  # noqa: E731
    weights = jax.jit(obj.log_importance_weights, static_argnums=(0, 1, 4))
    _, log_w = weights(flow, target, params, jax.random.key(9), n)
    log_z, se = obj.log_z_estimate(log_w)
    true_log_z = math.log(2 * math.pi * s**2)
    kl = 2 * (math.log(s) + 1 / (2 * s**2) - 0.5)  # KL(N(0, I) || N(0, s^2 I))
    second_moment = (s**-2 / math.sqrt(2 / s**2 - 1)) ** 2  # E_q[w^2] / E_q[w]^2
    np.testing.assert_allclose(obj.mean_log_weight(log_w), true_log_z - kl, atol=3e-3)
    np.testing.assert_allclose(obj.ess(log_w), 1 / second_moment, atol=5e-3)
    np.testing.assert_allclose(se, math.sqrt((second_moment - 1) / n), rtol=0.05)
    assert abs(float(log_z) - true_log_z) < 4 * float(se)


def test_mixed_kl_is_the_weighted_sum():
    flow, params = _random_linear_flow(jax.random.key(10))
    target = lambda x: -0.5 * jnp.sum(x**2)  # noqa: E731
    batch = jax.random.normal(jax.random.key(11), (32, 2))
    key = jax.random.key(12)
    mixed_fn = obj.mixed_kl(flow, target, mle_weight=0.7, reverse_kl_weight=0.2)
    mixed = jax.jit(mixed_fn, static_argnums=3)(params, batch, key, 16)
    want = jax.jit(
        lambda p: (
            0.7 * obj.forward_kl(flow)(p, batch) + 0.2 * obj.reverse_kl(flow, target)(p, key, 16)
        )
    )(params)
    chex.assert_trees_all_close(mixed, want, atol=1e-5)


def test_bits_per_dim():
    np.testing.assert_allclose(obj.bits_per_dim(8 * math.log(2.0), 8), 1.0)
    nll = -stats.norm.logpdf(np.zeros(4)).sum()
    np.testing.assert_allclose(obj.bits_per_dim(nll, 4), 0.5 * math.log2(2 * math.pi))
