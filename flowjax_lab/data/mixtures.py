"""Gaussian mixtures and random correlated Gaussians in any dimension, with exact densities."""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from flowjax_lab.core import as_key

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture(NamedTuple):
    """p(x) = sum_k w_k N(x; mu_k, L_k L_k^T), as arrays plus pure functions.

    Attributes:
      means: (k, d) component means mu_k.
      scale_trils: (k, d, d) lower-triangular Cholesky factors L_k of the covariances.
      log_weights: (k,) normalised log-weights log w_k.
      sample: `(key, n) -> (n, d)`: draws k ~ Cat(w), then mu_k + L_k eps, eps ~ N(0, I).
      log_prob: `(..., d) -> (...)`: logsumexp_k [log w_k + log N(x; mu_k, L_k L_k^T)], with
        log N = -|L_k^{-1}(x - mu_k)|^2 / 2 - sum_i log L_k,ii - d log(2 pi) / 2. Cost O(k d^2).
    """

    means: jax.Array
    scale_trils: jax.Array
    log_weights: jax.Array
    sample: Callable[[jax.Array, int], jax.Array]
    log_prob: Callable[[jax.Array], jax.Array]


class Gaussian(NamedTuple):
    """Mean (d,) and covariance (d, d) of a multivariate normal."""

    mean: jax.Array
    cov: jax.Array


def _scale_trils(xp, scales_or_covs, k: int, d: int):
    """Cholesky factors (k, d, d) from scalar / (k,) / (k, d) scales or (k, d, d) covariances."""
    s = xp.asarray(scales_or_covs)
    eye = xp.eye(d)
    if s.ndim == 0:
        s = s * xp.ones((k,))
    if s.ndim == 1 and s.shape == (k,):
        return s[:, None, None] * eye
    if s.ndim == 2 and s.shape == (k, d):
        return s[:, :, None] * eye
    if s.ndim == 3 and s.shape == (k, d, d):
        return xp.linalg.cholesky(0.5 * (s + xp.swapaxes(s, -1, -2)))
    raise ValueError(
        f"scales_or_covs must be a scalar or have shape ({k},) (isotropic sd), ({k}, {d}) "
        f"(diagonal sd) or ({k}, {d}, {d}) (covariances); got shape {s.shape}"
    )


def gaussian_mixture(
    means: jax.Array, scales_or_covs: jax.Array, weights: jax.Array | None = None
) -> GaussianMixture:
    """Builds a Gaussian mixture with exact sampling and log-density.

    Concrete arguments are preprocessed (Cholesky, inverse) in float64 numpy, so building a
    mixture compiles nothing; traced arguments (construction inside `jax.jit`) use jax.numpy.

    Args:
      means: (k, d) component means.
      scales_or_covs: the component spreads, by rank: a scalar or (k,) isotropic standard
        deviations, (k, d) diagonal standard deviations, or (k, d, d) covariance matrices.
      weights: (k,) non-negative mixture weights (normalised here); None for uniform.

    Returns:
      A `GaussianMixture`; `log_prob` takes one event (d,) or a batch (..., d).

    Example:
      >>> gm = gaussian_mixture(jnp.array([[-2.0, 0.0], [2.0, 0.0]]), 0.5)
      >>> x = gm.sample(jax.random.key(0), 100)   # (100, 2)
      >>> gm.log_prob(x).shape
      (100,)
    """
    dtype = jnp.result_type(float)
    leaves = jax.tree_util.tree_leaves((means, scales_or_covs, weights))
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
    xp = jnp if traced else np
    means = xp.asarray(means)
    if means.ndim != 2:
        raise ValueError(f"means must have shape (k, d), got shape {means.shape}")
    k, d = means.shape
    trils = _scale_trils(xp, scales_or_covs, k, d)
    if weights is None:
        log_weights = xp.full((k,), -math.log(k))
    else:
        weights = xp.asarray(weights)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got shape {weights.shape}")
        with np.errstate(divide="ignore"):  # a zero weight is a -inf log-weight
            log_weights = xp.log(weights) - xp.log(xp.sum(weights))
    inv_trils = xp.linalg.inv(trils)
    half_log_dets = xp.sum(xp.log(xp.diagonal(trils, axis1=-2, axis2=-1)), -1)  # (k,)
    means, trils, inv_trils, log_weights, half_log_dets = (
        jnp.asarray(a, dtype) for a in (means, trils, inv_trils, log_weights, half_log_dets)
    )

    def sample(key: jax.Array, n: int) -> jax.Array:
        key_comp, key_noise = jax.random.split(as_key(key))
        comp = jax.random.categorical(key_comp, log_weights, shape=(n,))
        eps = jax.random.normal(key_noise, (n, d), dtype)
        return means[comp] + jnp.einsum("nij,nj->ni", trils[comp], eps)

    def log_prob(x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.shape[-1:] != (d,):
            raise ValueError(f"expected events of dimension {d}, got shape {x.shape}")
        diff = x[..., None, :] - means  # (..., k, d)
        z = jnp.einsum("kij,...kj->...ki", inv_trils, diff)
        log_comp = -0.5 * jnp.sum(z**2, -1) - half_log_dets - 0.5 * d * _LOG_2PI
        return logsumexp(log_comp + log_weights, -1)

    return GaussianMixture(means, trils, log_weights, sample, log_prob)


def correlated_gaussian(
    key: jax.Array, dim: int, min_eigenvalue: float = 0.5, max_eigenvalue: float = 2.0
) -> Gaussian:
    """A random, well-conditioned Gaussian: mean ~ N(0, I), cov = Q diag(lambda) Q^T.

    Q is a Haar-random rotation (QR of a Gaussian matrix with the sign fix) and the eigenvalues
    are log-uniform in [min_eigenvalue, max_eigenvalue], so cond(cov) <= max / min (4 by default).

    Args:
      key: jax random key.
      dim: dimension d.
      min_eigenvalue: smallest possible eigenvalue of cov.
      max_eigenvalue: largest possible eigenvalue of cov.

    Returns:
      `Gaussian(mean (d,), cov (d, d))`, unpackable as `mean, cov = ...`.
    """
    if not 0.0 < min_eigenvalue <= max_eigenvalue:
        raise ValueError(
            f"need 0 < min_eigenvalue <= max_eigenvalue, got {min_eigenvalue}, {max_eigenvalue}"
        )
    dtype = jnp.result_type(float)
    key_mean, key_rot, key_eig = jax.random.split(as_key(key), 3)
    mean = jax.random.normal(key_mean, (dim,), dtype)
    q, r = jnp.linalg.qr(jax.random.normal(key_rot, (dim, dim), dtype))
    q = q * jnp.sign(jnp.diagonal(r))
    log_eigs = jax.random.uniform(
        key_eig, (dim,), dtype, math.log(min_eigenvalue), math.log(max_eigenvalue)
    )
    cov = (q * jnp.exp(log_eigs)) @ q.T
    return Gaussian(mean, 0.5 * (cov + cov.T))


def gaussian_entropy(cov: jax.Array) -> jax.Array:
    """Differential entropy of N(mu, cov) in nats: H = 0.5 logdet(2 pi e cov).

    = 0.5 (d (log(2 pi) + 1) + logdet cov). The NLL of a perfect model, averaged over its own
    samples, tends to H.
    """
    cov = jnp.asarray(cov)
    d = cov.shape[-1]
    _, logdet = jnp.linalg.slogdet(cov)
    return 0.5 * (d * (_LOG_2PI + 1.0) + logdet)
