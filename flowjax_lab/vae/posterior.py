"""The amortised posterior q(z | x): a diagonal Gaussian followed by IAF steps (Kingma et al. 2016).

One conditional transform on the latent z, its context c = [mu, log_sigma, h] the encoder's
output for x (lengths d, d and context_dim). In the generative direction g (noise -> z):

  z_0 = mu + exp(log_sigma) * eps,      eps ~ N(0, I_d)
  z_t = IAF_t(z_{t-1}; h),              t = 1..T, a reverse permutation between steps

so log q(z_T | x) = log N(eps) - sum log_sigma - sum_t log|det dz_t / dz_{t-1}|. Each IAF step
is the library's ``transforms.iaf`` (a MADE with the context h as an extra input): sampling z
with log q is ONE MADE pass per step; the density of a given z (``apply``, f) is d sequential
passes per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from flowjax_lab import transforms as T
from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, chain, check_vector_event, stack


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
    d, total = latent_dim, 2 * latent_dim + context_dim
    step = T.iaf(tuple(hidden), context_dim=context_dim)
    flows = None
    if steps:
        flows = stack(chain(step, T.reverse_permutation()) if d > 1 else step, steps)

    def split(context, z, where):
        check_vector_event(z, where)
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


def posterior_context_dim(latent_dim: int, context_dim: int) -> int:
    """Length of the encoder output [mu, log_sigma, h] for `iaf_posterior`: 2 d + context_dim."""
    return 2 * latent_dim + context_dim


__all__ = ["iaf_posterior", "posterior_context_dim"]
