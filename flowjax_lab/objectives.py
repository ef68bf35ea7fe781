"""Objectives (forward KL, reverse KL, a weighted mix) as losses of params, and diagnostics.

Losses are pure functions of params (jit, grad and vmap them); nothing here is jitted. The
diagnostics work on log importance weights log w_j = log pi(x_j) - log q(x_j), x_j ~ q, where pi
is an unnormalised target with normaliser Z and q the flow.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from flowjax_lab.core import Flow, as_key


def forward_kl(flow: Flow) -> Callable:
    """Forward KL(pi || p_theta) up to a constant: the mean negative log-likelihood of a batch.

    loss(params, batch, context=None) = -mean_i log p(x_i | theta)
                                      = -mean_i [log p_base(f(x_i)) + log|det J_f(x_i)|].
    Needs f (``apply``) only: one pass per event for MAF-like layers.
    """

    def loss(params, batch, context=None):
        return -jnp.mean(flow.log_prob(params, batch, context))

    return loss


def reverse_kl(flow: Flow, target_log_prob: Callable, stick_the_landing: bool = False) -> Callable:
    """Reverse KL(p_theta || pi) up to log Z, by Monte Carlo over base samples.

    loss(params, key, n, context=None) = mean_j [log p_base(z_j) - log|det J_g(z_j)|
    - log pi(g(z_j))], z_j ~ p_base. Needs g (``inverse``) and an unnormalised
    ``target_log_prob`` of ONE event; equals KL(p_theta || pi) - log Z, so it is >= -log Z with
    equality iff p_theta = pi / Z.

    ``stick_the_landing`` (Roeder et al. 2017): x_j = g(z_j; theta) keeps its gradient, but
    log q(x_j) is evaluated as log p(x_j | stop_gradient(theta)), dropping the score term whose
    expectation is zero. Same value, lower-variance gradient (zero variance when q = pi / Z);
    costs one extra f pass per sample (for an IAF, d sequential passes on partial MADEs; measured
    1.7x the plain step for a 6-layer 2-D spline IAF, 3.5x for a 6-layer 8-D affine IAF).
    """

    def loss(params, key, n, context=None):
        x, log_q = flow.sample_and_log_prob(params, as_key(key), n, context)
        if stick_the_landing:
            log_q = flow.log_prob(jax.lax.stop_gradient(params), x, context)
        return jnp.mean(log_q - jax.vmap(target_log_prob)(x))

    return loss


def mixed_kl(
    flow: Flow,
    target_log_prob: Callable,
    mle_weight: float = 1.0,
    reverse_kl_weight: float = 1.0,
    stick_the_landing: bool = False,
) -> Callable:
    """A weighted mix of the two, as for Boltzmann generators (data for some modes, energy for all).

    loss(params, batch, key, n, batch_context=None, sample_context=None)
      = mle_weight * forward_kl(params, batch) + reverse_kl_weight * reverse_kl(params, key, n).
    Cost: one f pass per data event plus one g pass per base sample.
    """
    fkl = forward_kl(flow)
    rkl = reverse_kl(flow, target_log_prob, stick_the_landing)

    def loss(params, batch, key, n, batch_context=None, sample_context=None):
        return mle_weight * fkl(params, batch, batch_context) + reverse_kl_weight * rkl(
            params, key, n, sample_context
        )

    return loss


# --------------------------------------------------------------------------- diagnostics


def log_importance_weights(
    flow: Flow, target_log_prob: Callable, params, key, n: int, context=None
) -> tuple[jax.Array, jax.Array]:
    """n samples x_j ~ q and their log weights log w_j = log pi(x_j) - log q(x_j): ((n, *e), (n,))."""
    x, log_q = flow.sample_and_log_prob(params, as_key(key), n, context)
    return x, jax.vmap(target_log_prob)(x) - log_q


def elbo(log_w: jax.Array) -> jax.Array:
    """ELBO = mean_j log w_j = E_q[log pi - log q] = log Z - KL(q || pi / Z) <= log Z."""
    return jnp.mean(log_w)


def log_z_estimate(log_w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Importance-sampling estimate of log Z and its standard error.

    log Z_hat = logsumexp(log w) - log n (consistent; biased low by ~ SE^2 / 2, the IWAE bound).
    SE by the delta method: SE(log Z_hat) ~ sd(w) / (sqrt(n) mean(w))
    = sqrt((n sum_j wbar_j^2 - 1) / (n - 1)) with normalised weights wbar = w / sum w.
    """
    n = log_w.shape[0]
    log_z = logsumexp(log_w) - math.log(n)
    ratio = 1.0 / ess(log_w)  # n sum wbar^2 = E[w^2] / E[w]^2
    se = jnp.sqrt(jnp.maximum(ratio - 1.0, 0.0) / max(n - 1, 1))
    return log_z, se


def ess(log_w: jax.Array) -> jax.Array:
    """Effective sample size as a fraction of n: (sum w)^2 / (n sum w^2), in (0, 1].

    1 exactly when all weights are equal (q = pi / Z); computed in log space.
    """
    n = log_w.shape[0]
    return jnp.exp(2.0 * logsumexp(log_w) - logsumexp(2.0 * log_w) - math.log(n))


def bits_per_dim(
    nll: jax.Array,
    dim: int,
    preprocessing_logdet: jax.Array = 0.0,
    num_levels: int | None = None,
) -> jax.Array:
    """A negative log-likelihood in nats per event as bits per dimension of the data.

    bpd = (nll - preprocessing_logdet + [dim log num_levels]) / (dim log 2).

    ``preprocessing_logdet`` is log|det d(model input)/d(data)| (e.g. ``data.logit_logdet``
    or ``data.standardize_logdet``); pass ``num_levels = L`` when the data is x = (p + u) / L
    to report on the integer pixel scale (the usual image bits/dim). Elementwise on
    per-example arrays; the mean of the result is the result for the means.

    Example:
      >>> bits_per_dim(100.0, 64, -20.0)  # 120 / (64 log 2) = 2.705...
    """
    nll = nll - preprocessing_logdet
    if num_levels is not None:
        nll = nll + dim * math.log(num_levels)
    return nll / (dim * math.log(2.0))


class ImportanceDiagnostics(NamedTuple):
    """Reverse-KL diagnostics from n importance samples (scalars)."""

    elbo: jax.Array
    log_z: jax.Array
    log_z_se: jax.Array
    ess: jax.Array  # ESS / n


def importance_diagnostics(
    flow: Flow, target_log_prob: Callable, params, key, n: int = 10_000, context=None
) -> ImportanceDiagnostics:
    """ELBO, log Z estimate with its standard error, and ESS / n from n samples of the flow."""
    _, log_w = log_importance_weights(flow, target_log_prob, params, key, n, context)
    log_z, se = log_z_estimate(log_w)
    return ImportanceDiagnostics(elbo(log_w), log_z, se, ess(log_w))
