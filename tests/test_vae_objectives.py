"""ELBO and IWAE-k (plain and DReG) on a linear-Gaussian latent model with exact log p(x).

p(z) = N(0, I_2), p(x | z) = N(W z + b, sigma^2 I_3), so p(x) = N(b, W W^T + sigma^2 I) and, with
W's columns orthogonal, the exact posterior is a diagonal Gaussian q*(z | x) = N(A x + c, S).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax_lab as fl
from flowjax_lab import objectives as obj

D, LATENT, SIGMA = 3, 2, 0.7
Q = np.linalg.qr(np.array([[1.0, 0.3], [0.2, -1.0], [0.5, 0.4]]))[0]
W = Q * np.array([1.5, 0.8])  # orthogonal columns: W^T W diagonal
B = np.array([0.3, -0.2, 0.1])
X = np.array([1.2, -0.4, 0.9], np.float32)


def log_normal(x, mean, log_scale):
    return jnp.sum(
        -0.5 * ((x - mean) * jnp.exp(-log_scale)) ** 2 - log_scale
    ) - 0.5 * x.size * math.log(2 * math.pi)


def log_joint(p, x, z):
    return log_normal(x, p["W"] @ z + p["b"], p["log_sigma"] * jnp.ones(D)) + log_normal(
        z, 0.0, jnp.zeros(LATENT)
    )


def sample_and_log_q(p, x, key, k):
    mu = p["A"] @ x + p["c"]
    eps = jax.random.normal(key, (k, LATENT))
    z = mu + jnp.exp(p["log_s"]) * eps
    return z, jax.vmap(lambda e: log_normal(e, 0.0, jnp.zeros(LATENT)))(eps) - jnp.sum(p["log_s"])


def log_q(p, x, z):
    return log_normal(z, p["A"] @ x + p["c"], p["log_s"])


def exact_log_px(x):
    cov = W @ W.T + SIGMA**2 * np.eye(D)
    r = np.asarray(x, np.float64) - B
    return -0.5 * (
        r @ np.linalg.solve(cov, r) + np.linalg.slogdet(cov)[1] + D * math.log(2 * math.pi)
    )


def params(exact_posterior: bool):
    post_cov = np.linalg.inv(np.eye(LATENT) + W.T @ W / SIGMA**2)
    a = post_cov @ W.T / SIGMA**2
    p = {
        "W": W, "b": B, "log_sigma": np.log(SIGMA),
        "A": a, "c": -a @ B, "log_s": 0.5 * np.log(np.diag(post_cov)),
    }  # fmt: skip
    if not exact_posterior:  # a worse q: shrunk mean, wider
        p.update(A=0.5 * a, c=-0.5 * a @ B + 0.3, log_s=p["log_s"] + 0.4)
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), p)


def _replicates(bound, p, n, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    return jax.jit(jax.vmap(bound, (None, None, 0)))(p, jnp.asarray(X), keys)


def test_bounds_are_exact_at_the_true_posterior():
    p = params(exact_posterior=True)
    for bound in (
        obj.elbo(log_joint, sample_and_log_q, 3),
        obj.iwae_bound(log_joint, sample_and_log_q, 7),
        obj.iwae_bound(log_joint, sample_and_log_q, 7, "dreg", log_q),
    ):
        np.testing.assert_allclose(_replicates(bound, p, 4), exact_log_px(X), atol=2e-5)


def test_elbo_below_iwae_non_decreasing_in_k_and_converging_to_log_px():
    p, truth, n = params(exact_posterior=False), exact_log_px(X), 2000
    elbo = _replicates(obj.elbo(log_joint, sample_and_log_q), p, n)
    means, ses = [float(elbo.mean())], [float(elbo.std() / math.sqrt(n))]
    for k in (1, 4, 16, 64, 512):
        values = _replicates(obj.iwae_bound(log_joint, sample_and_log_q, k), p, n, seed=k)
        means.append(float(values.mean()))
        ses.append(float(values.std() / math.sqrt(n)))
    gaps = truth - np.asarray(means)
    assert abs(means[0] - means[1]) < 4 * math.hypot(ses[0], ses[1])  # IWAE-1 is the ELBO
    assert gaps[0] > 0.5, gaps  # a poor q: the ELBO is well below log p(x)
    for i in range(1, len(gaps) - 1):  # E[IWAE-k] increases with k, by more than MC error
        assert gaps[i + 1] < gaps[i] - 3 * math.hypot(ses[i], ses[i + 1]), (gaps, ses)
    assert gaps[-1] > -3 * ses[-1], (gaps, ses)  # still a lower bound
    assert gaps[-1] < 0.02, gaps  # IWAE-512 within 0.02 nats of the exact log p(x)


def _grads(estimator, p, n, k=8):
    bound = obj.iwae_bound(log_joint, sample_and_log_q, k, estimator, log_q)
    grad = jax.vmap(jax.value_and_grad(bound), (None, None, 0))
    keys = jax.random.split(jax.random.key(11), n)
    return jax.jit(grad)(p, jnp.asarray(X), keys)


def test_dreg_and_plain_gradients_agree_in_expectation():
    p, n = params(exact_posterior=False), 20_000
    (v_plain, g_plain), (v_dreg, g_dreg) = _grads("plain", p, n), _grads("dreg", p, n)
    np.testing.assert_allclose(v_dreg, v_plain, atol=1e-5)  # the value is the IWAE bound
    for name in ("W", "b", "log_sigma"):  # decoder: the same estimator, sample by sample
        np.testing.assert_allclose(g_dreg[name], g_plain[name], atol=1e-4, rtol=1e-4)
    for name in ("A", "c", "log_s"):  # encoder: same expectation, lower variance
        diff = np.asarray(g_dreg[name] - g_plain[name], np.float64).reshape(n, -1)
        mean = np.asarray(g_plain[name], np.float64).reshape(n, -1).mean(0)
        se_diff = diff.std(0) / math.sqrt(n)
        np.testing.assert_array_less(np.abs(diff.mean(0)), 4 * se_diff + 1e-6)
        assert np.max(np.abs(mean)) > 10 * np.max(se_diff), name  # a real, non-zero gradient
        assert g_dreg[name].var(0).sum() < g_plain[name].var(0).sum(), name


def test_dreg_encoder_gradient_vanishes_at_the_true_posterior():
    p = params(exact_posterior=True)
    (_, g_plain), (_, g_dreg) = _grads("plain", p, 64), _grads("dreg", p, 64)
    encoder = lambda g: np.concatenate([np.ravel(g[k]) for k in ("A", "c", "log_s")])  # noqa: E731
    assert np.max(np.abs(encoder(g_dreg))) < 1e-4  # zero variance: every log w is log p(x)
    assert np.max(np.abs(encoder(g_plain))) > 1e-2  # the score term is zero only on average


def test_log_weight_reductions_are_the_diagnostics():
    log_w = jax.random.normal(jax.random.key(3), (1000,)) * 0.5 - 2.0
    diag_log_z, _ = obj.log_z_estimate(log_w)
    chex.assert_trees_all_close(obj.iwae_from_log_weights(log_w), diag_log_z)
    np.testing.assert_allclose(obj.mean_log_weight(log_w), jnp.mean(log_w), rtol=1e-6)
    assert float(obj.mean_log_weight(log_w)) <= float(obj.iwae_from_log_weights(log_w))


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="k must be an integer number of samples >= 1, got 0"):
        obj.iwae_bound(log_joint, sample_and_log_q, 0)
    with pytest.raises(ValueError, match="got 2.5"):
        obj.elbo(log_joint, sample_and_log_q, 2.5)
    with pytest.raises(ValueError, match="estimator must be one of"):
        obj.iwae_bound(log_joint, sample_and_log_q, 4, "rws")
    with pytest.raises(ValueError, match="needs log_q"):
        obj.iwae_bound(log_joint, sample_and_log_q, 4, "dreg")
    with pytest.raises(TypeError, match="fl.mean_log_weight"):  # the old fl.elbo(log_w)
        fl.elbo(jnp.zeros(5), sample_and_log_q)
