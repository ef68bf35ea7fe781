"""Amortised posteriors q(z | x): a diagonal Gaussian followed by IAF steps (Kingma et al. 2016)
or by Sylvester steps (van den Berg et al. 2018).

One conditional transform on the latent z, its context c = [mu, log_sigma, h] the encoder's
output for x (lengths d, d and context_dim). In the generative direction g (noise -> z):

  z_0 = mu + exp(log_sigma) * eps,      eps ~ N(0, I_d)
  z_t = IAF_t(z_{t-1}; h),              t = 1..T, a reverse permutation between steps

so log q(z_T | x) = log N(eps) - sum log_sigma - sum_t log|det dz_t / dz_{t-1}|. Each IAF step
is the library's ``transforms.iaf`` (a MADE with the context h as an extra input): sampling z
with log q is ONE MADE pass per step; the density of a given z (``apply``, f) is d sequential
passes per step.

`sylvester_posterior` replaces the IAF steps by Sylvester steps z_t = z_{t-1} + Q R tanh(R~ Q^T
z_{t-1} + b) whose params (R, R~, b and Q's raw params) are linear functions of h: the
encoder outputs a different flow for every x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flowjax_lab import transforms as T
from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, as_key, chain, check_vector_event, stack

_HEAD_INIT = 0.01  # head kernels ~ N(0, 0.01^2 / context_dim): q starts nearly the same for all x


def _split_context(context, z, where, d, context_dim):
    """(mu, log_sigma, h) from c = [mu, log_sigma, h], with shape checks naming the sizes."""
    check_vector_event(z, where)
    total = 2 * d + context_dim
    if z.shape != (d,):
        raise ValueError(f"{where}: expected a latent of shape ({d},), got {tuple(z.shape)}")
    if context is None or jnp.shape(context) != (total,):
        got = None if context is None else tuple(jnp.shape(context))
        raise ValueError(
            f"{where}: expected a context [mu, log_sigma, h] of shape ({total},) = (2 x "
            f"latent_dim {d} + context_dim {context_dim},), got {got}"
        )
    context = jnp.asarray(context, z.dtype)
    h = context[2 * d :] if context_dim else None
    return context[:d], context[d : 2 * d], h


def iaf_posterior(
    latent_dim: int, steps: int = 2, hidden: Sequence[int] = (64, 64), context_dim: int = 0
) -> Transform:
    """Diagonal Gaussian then ``steps`` IAF steps, conditioned on c = [mu, log_sigma, h].

    ``inverse`` is g: eps -> z, z = IAF_T(... IAF_1(mu + exp(log_sigma) eps; h) ...; h) with
    log|det dg/deps| = sum log_sigma + sum_t log|det J_t|, one MADE pass per step.
    ``apply`` is f = g^-1 (z -> eps), d sequential passes per step. ``steps=0`` is the diagonal
    Gaussian posterior (no params). Params: ``{"iaf": <stacked params of
    chain(transforms.iaf(hidden, context_dim=context_dim), transforms.reverse_permutation())>}``
    (``{}`` when steps = 0); the IAF output kernels start near zero, so q starts Gaussian.

    Args:
      latent_dim: d, the length of z.
      steps: number of IAF steps T (0: diagonal Gaussian).
      hidden: MADE hidden widths of each step (use >= d - 1).
      context_dim: length of h (0: the IAF steps see only z).

    The context must have shape (2 d + context_dim,).

    Example:
      >>> t = iaf_posterior(4, steps=2, hidden=(16, 16), context_dim=3)
      >>> p = t.init(jax.random.key(0), jnp.zeros(4))
      >>> z, log_det = t.inverse(p, jnp.zeros(4), context=jnp.zeros(11))
    """
    for name, v, lo in (
        ("latent_dim", latent_dim, 1),
        ("steps", steps, 0),
        ("context_dim", context_dim, 0),
    ):
        positive_int(v, f"iaf_posterior: {name}", minimum=lo)
    d = latent_dim
    step = T.iaf(tuple(hidden), context_dim=context_dim)
    flows = None
    if steps:
        flows = stack(chain(step, T.reverse_permutation()) if d > 1 else step, steps)

    def split(context, z, where):
        return _split_context(context, z, where, d, context_dim)

    def init(key, z_example):
        check_vector_event(z_example, "iaf_posterior.init")
        return {"iaf": flows.init(key, z_example)} if steps else {}

    def inverse(params, eps, *, context=None):
        mu, log_sigma, h = split(context, eps, "iaf_posterior.inverse")
        z, log_det = mu + jnp.exp(log_sigma) * eps, jnp.sum(log_sigma)
        if steps:
            z, ld = flows.inverse(params["iaf"], z, context=h)
            log_det = log_det + ld
        return z, log_det

    def apply(params, z, *, context=None):
        mu, log_sigma, h = split(context, z, "iaf_posterior.apply")
        log_det = jnp.zeros((), z.dtype)
        if steps:
            z, log_det = flows.apply(params["iaf"], z, context=h)
        return (z - mu) * jnp.exp(-log_sigma), log_det - jnp.sum(log_sigma)

    return Transform(init, apply, inverse)


def sylvester_posterior(
    latent_dim: int,
    steps: int = 4,
    kind: str = "orthogonal",
    num_vectors: int | None = None,
    context_dim: int = 0,
) -> Transform:
    """Diagonal Gaussian then ``steps`` amortised Sylvester steps, conditioned on
    c = [mu, log_sigma, h] (van den Berg et al. 2018).

    Step t is ``transforms.sylvester(kind, num_vectors)`` (followed by a reverse permutation
    for ``kind="triangular"``) at params theta_t(h) = bias_t + h . kernel_t: linear heads from
    the encoder's h to every Sylvester param (R, R~, b and Q's raw matrix or Householder
    vectors), so each x gets its own flow. The Sylvester reparametrisation keeps every step
    invertible for any h.

    ``inverse`` is g: eps -> z, z_0 = mu + exp(log_sigma) eps, z_t = z_{t-1} + Q R tanh(R~ Q^T
    z_{t-1} + b) (theta_t(h)), log|det dg/deps| = sum log_sigma + sum_t sum_i log|1 + r_ii
    r~_ii tanh'(.)|: ONE pass per step (what the ELBO and IWAE need), O(d M + M^2) per step
    plus forming Q (O(d M^2) orthogonal, O(K d) householder) and the heads (O(context_dim P),
    P params per step). ``apply`` (f = g^-1, log q of a given z, e.g. DReG) solves each step
    numerically: M sequential scalar root-finds per step (see ``transforms.sylvester``).

    Params: {"bias": <stacked params of the steps>, "kernel": <the same leaves with a leading
    axis of context_dim>} ("kernel" absent when context_dim = 0: the steps are then shared by
    every x). The bias is the steps' init (close to the identity), the kernels ~
    N(0, 0.01^2 / context_dim).

    Args:
      latent_dim: d, the length of z.
      steps: number of Sylvester steps T (>= 1).
      kind: "orthogonal", "householder" or "triangular" (see ``transforms.sylvester``).
      num_vectors: M <= d (default d).
      context_dim: length of h (0: no amortised flow params).

    The context must have shape (2 d + context_dim,).

    Example:
      >>> t = sylvester_posterior(4, steps=2, kind="householder", context_dim=3)
      >>> p = t.init(jax.random.key(0), jnp.zeros(4))
      >>> z, log_det = t.inverse(p, jnp.zeros(4), context=jnp.zeros(11))
    """
    for name, v, lo in (
        ("latent_dim", latent_dim, 1),
        ("steps", steps, 1),
        ("context_dim", context_dim, 0),
    ):
        positive_int(v, f"sylvester_posterior: {name}", minimum=lo)
    d = latent_dim
    if num_vectors is not None and positive_int(num_vectors, "sylvester_posterior: num_vectors") > d:
        raise ValueError(
            f"sylvester_posterior: num_vectors must be <= latent_dim = {d}, got {num_vectors}"
        )
    layer = T.sylvester(kind, num_vectors)
    unit = chain(layer, T.reverse_permutation()) if kind == "triangular" and d > 1 else layer
    flows = stack(unit, steps)
    keys = ("bias", "kernel") if context_dim else ("bias",)

    def init(key, z_example):
        check_vector_event(z_example, "sylvester_posterior.init")
        k_bias, k_kernel = jax.random.split(as_key(key))
        bias = flows.init(k_bias, z_example)
        if not context_dim:
            return {"bias": bias}
        leaves, tree = jax.tree.flatten(bias)
        scale = _HEAD_INIT / math.sqrt(context_dim)
        kernel = [
            scale * jax.random.normal(k, (context_dim, *leaf.shape), leaf.dtype)
            for leaf, k in zip(leaves, jax.random.split(k_kernel, len(leaves)))
        ]
        return {"bias": bias, "kernel": jax.tree.unflatten(tree, kernel)}

    def step_params(params, h, where):
        if not isinstance(params, dict) or set(params) != set(keys):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(f"{where}: expected params with keys {list(keys)}, got {got}")
        if not context_dim:
            return params["bias"]
        return jax.tree.map(
            lambda b, w: b + jnp.tensordot(h, w, axes=1), params["bias"], params["kernel"]
        )

    def inverse(params, eps, *, context=None):
        where = "sylvester_posterior.inverse"
        mu, log_sigma, h = _split_context(context, eps, where, d, context_dim)
        z, ld = flows.inverse(step_params(params, h, where), mu + jnp.exp(log_sigma) * eps)
        return z, ld + jnp.sum(log_sigma)

    def apply(params, z, *, context=None):
        where = "sylvester_posterior.apply"
        mu, log_sigma, h = _split_context(context, z, where, d, context_dim)
        z, ld = flows.apply(step_params(params, h, where), z)
        return (z - mu) * jnp.exp(-log_sigma), ld - jnp.sum(log_sigma)

    return Transform(init, apply, inverse)


def posterior_context_dim(latent_dim: int, context_dim: int) -> int:
    """Length of the encoder output [mu, log_sigma, h] for `iaf_posterior`: 2 d + context_dim."""
    return 2 * latent_dim + context_dim


__all__ = ["iaf_posterior", "posterior_context_dim", "sylvester_posterior"]
