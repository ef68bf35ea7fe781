"""Objectives: forward KL (maximum likelihood) and reverse KL, as losses of params."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

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


def reverse_kl(flow: Flow, target_log_prob: Callable) -> Callable:
    """Reverse KL(p_theta || pi) up to log Z, by Monte Carlo over base samples.

    loss(params, key, n) = mean_j [log p_base(z_j) - log|det J_g(z_j)| - log pi(g(z_j))],
    z_j ~ p_base. Needs g (``inverse``) and an unnormalised ``target_log_prob`` of ONE event;
    equals KL(p_theta || pi) - log Z, so it is >= -log Z with equality iff p_theta = pi / Z.
    """

    def loss(params, key, n, context=None):
        x, log_q = flow.sample_and_log_prob(params, as_key(key), n, context)
        return jnp.mean(log_q - jax.vmap(target_log_prob)(x))

    return loss
