"""Flows: normalisation, maximum likelihood, the KL duality, and the distrax bridge."""

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowjax_lab as fl

T = fl.transforms


def _random_linear_flow(dim, key):
    flow = fl.make_flow(
        fl.chain(T.lu_linear(), T.affine(), T.qr_linear(), T.triangular(lower=False)),
        event_shape=(dim,),
    )
    params = fl.testing.randomize_params(key, flow.init(jax.random.key(0)), scale=0.3)
    return flow, params


def test_log_prob_and_sample_shapes():
    flow, params = _random_linear_flow(3, jax.random.key(1))
    assert flow.log_prob(params, jnp.zeros((4, 5, 3))).shape == (4, 5)
    assert flow.log_prob(params, jnp.zeros(3)).shape == ()
    x, lp = flow.sample_and_log_prob(params, jax.random.key(2), 7)
    assert x.shape == (7, 3)
    chex.assert_trees_all_close(lp, flow.log_prob(params, x), atol=1e-4, rtol=1e-4)
    assert flow.sample(params, jax.random.key(2), np.int64(0)).shape == (0, 3)
    with pytest.raises(TypeError, match="n must be an integer number of samples, got \\(7,\\)"):
        flow.sample(params, jax.random.key(2), (7,))
    with pytest.raises(ValueError, match="sample_and_log_prob: n must be >= 0"):
        flow.sample_and_log_prob(params, jax.random.key(2), -1)


def test_random_linear_flow_integrates_to_one():
    flow, params = _random_linear_flow(2, jax.random.key(3))
    x = flow.sample(params, jax.random.key(4), 10_000)
    lo, hi = x.mean(0) - 9 * x.std(0), x.mean(0) + 9 * x.std(0)  # the box holds all the mass
    gx, gy = jnp.linspace(lo[0], hi[0], 801), jnp.linspace(lo[1], hi[1], 801)
    xx, yy = jnp.meshgrid(gx, gy)
    pts = jnp.stack([xx.ravel(), yy.ravel()], -1)
    density = jnp.exp(jax.jit(flow.log_prob)(params, pts))
    total = float(density.sum() * (gx[1] - gx[0]) * (gy[1] - gy[0]))
    assert abs(total - 1.0) < 1e-3, total


def _correlated_gaussian(key, dim):
    a = jax.random.normal(key, (dim, dim))
    cov = a @ a.T / dim + 0.3 * jnp.eye(dim)
    mean = jnp.arange(dim, dtype=jnp.float32) - dim / 2
    return mean, cov


def test_mle_linear_flow_reaches_gaussian_entropy():
    dim = 6
    mean, cov = _correlated_gaussian(jax.random.key(0), dim)
    target = distrax.MultivariateNormalFullCovariance(mean, cov)
    train = target.sample(seed=jax.random.key(1), sample_shape=(20_000,))
    test = target.sample(seed=jax.random.key(2), sample_shape=(50_000,))
    entropy = float(0.5 * jnp.linalg.slogdet(2 * jnp.pi * jnp.e * cov)[1])

    flow = fl.make_flow(fl.chain(T.lu_linear(), T.affine()), event_shape=(dim,))
    params = flow.init(jax.random.key(3))
    loss = fl.forward_kl(flow)
    opt = optax.adam(optax.cosine_decay_schedule(3e-2, 1500))

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(loss)(params, train)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), value

        return jax.lax.scan(step, (params, opt.init(params)), None, length=1500)

    (params, _), losses = fit(params)
    test_nll = float(loss(params, test))
    true_nll = float(-target.log_prob(test).mean())
    assert abs(test_nll - entropy) < 0.02, (test_nll, entropy)
    assert test_nll - true_nll < 0.01, (test_nll, true_nll)  # same samples: no sampling noise
    assert losses[-1] < losses[0] - 1.0


def test_kl_duality_between_data_and_noise_space():
    """KL(pi(x) || p(x|theta)) == KL(p(z|theta) || p(z)) on the same samples (the lecture's theorem)."""
    dim = 2
    mean, cov = _correlated_gaussian(jax.random.key(4), dim)
    pi = distrax.MultivariateNormalFullCovariance(mean, cov)
    flow, params = _random_linear_flow(dim, jax.random.key(5))
    x = pi.sample(seed=jax.random.key(6), sample_shape=(200_000,))
    log_ratio = pi.log_prob(x) - flow.log_prob(params, x)
    kl_x, std_err = jnp.mean(log_ratio), jnp.std(log_ratio) / jnp.sqrt(x.shape[0])

    z, logdet_f = jax.vmap(lambda v: flow.transform.apply(params, v))(x)
    log_p_z_theta = pi.log_prob(x) - logdet_f  # log pi(g(z)) + log|det J_g(z)|
    kl_z = jnp.mean(log_p_z_theta - flow.base.log_prob(z))
    chex.assert_trees_all_close(kl_x, kl_z, atol=1e-4)

    # Both equal the analytic KL between pi and the flow's (Gaussian) density.
    jac = jax.jacfwd(lambda v: flow.transform.inverse(params, v)[0])(jnp.zeros(dim))
    q = distrax.MultivariateNormalFullCovariance(
        flow.transform.inverse(params, jnp.zeros(dim))[0], jac @ jac.T
    )
    assert abs(kl_x - pi.kl_divergence(q)) < 4 * std_err, (kl_x, pi.kl_divergence(q), std_err)
    assert float(kl_x) > 0.05  # a non-trivial case


def test_to_distrax_agrees_with_flow():
    flow, params = _random_linear_flow(3, jax.random.key(7))
    dist = fl.to_distrax(flow, params)
    x = jax.random.normal(jax.random.key(8), (4, 2, 3))
    chex.assert_trees_all_close(dist.log_prob(x), flow.log_prob(params, x), atol=1e-5)
    key = jax.random.key(9)
    chex.assert_trees_all_close(dist.sample(seed=key, sample_shape=5), flow.sample(params, key, 5))


def test_from_distrax_scalar_affine_matches_affine():
    shift, log_scale = jnp.array([0.5, -1.0]), jnp.array([0.3, -0.2])
    ours = fl.make_flow(T.affine(), event_shape=(2,))
    theirs = fl.make_flow(
        fl.from_distrax(distrax.ScalarAffine(shift, jnp.exp(log_scale))), event_shape=(2,)
    )
    x = jax.random.normal(jax.random.key(0), (10, 2))
    ours_lp = ours.log_prob({"shift": shift, "log_scale": log_scale}, x)
    chex.assert_trees_all_close(
        ours_lp, theirs.log_prob(theirs.init(jax.random.key(0)), x), atol=1e-5
    )


def test_from_distrax_lu_affine_matches_inverted_lu_linear():
    d = 4
    t = T.lu_linear()
    p = fl.testing.randomize_params(jax.random.key(1), t.init(jax.random.key(0), jnp.zeros(d)))
    matrix = jnp.tril(p["lower"], -1) + jnp.triu(p["upper"], 1) + jnp.diag(jnp.exp(p["log_diag"]))
    bij = distrax.LowerUpperTriangularAffine(matrix, jnp.zeros(d))
    theirs = fl.make_flow(fl.from_distrax(bij), event_shape=(d,))
    ours = fl.make_flow(fl.invert(t), event_shape=(d,))
    x = jax.random.normal(jax.random.key(2), (10, d))
    chex.assert_trees_all_close(ours.log_prob(p, x), theirs.log_prob({}, x), atol=1e-4)
    # trainable distrax bijector: params flow through a function
    trainable = fl.from_distrax(
        lambda q: distrax.ScalarAffine(q["b"], jnp.exp(q["a"])),
        {"a": jnp.zeros(d), "b": jnp.zeros(d)},
    )
    q = trainable.init(jax.random.key(0), jnp.zeros(d))
    np.testing.assert_allclose(trainable.apply(q, x[0])[0], x[0])
