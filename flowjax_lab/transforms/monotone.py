"""Monotone transformers without a closed-form inverse: sum-of-squares polynomial and deep sigmoid.

Each is a `Transformer` (``num_params`` raw params per element, ``forward(x, raw) -> (y, log
dy/dx)``) whose inverse is `numerical_inverse`'s solver: pass it to ``maf``, ``iaf`` or
``coupling`` as ``transformer=``. MAF keeps its one-pass density; sampling (MAF) or density
(IAF) becomes d sequential numerical solves. Both start at (or near) the identity for zero raw
params, which zero-initialised conditioners give.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.transforms.numerical import numerical_transformer
from flowjax_lab.transforms.spline import Transformer, _soft_clamp

Array = jax.Array

# Soft bounds on the deep sigmoid's raw params (as the spline bounds its slopes): a conditioner
# cannot make a unit so flat, so far out or so light that the map has a plateau wider than float
# precision resolves, where any inverse (closed-form or numerical) loses its digits.
LOG_SLOPE_BOUND = 3.0  # |log a_j| < 3
OFFSET_BOUND = 4.0  # |b_j - centre_j| < 4
LOG_WEIGHT_BOUND = 3.0  # |weight logit| < 3


def sos_transformer(
    degree: int = 2, terms: int = 2, min_slope: float = 1e-3, **solver
) -> Transformer:
    """Sum-of-squares polynomial transformer (SOS flow, Jaini et al. 2019).

    f(x) = c + delta x + int_0^x sum_k q_k(u)^2 du with q_k(u) = sum_{l <= r} a_kl u^l, k < K
    (``terms``), r = ``degree``: a strictly increasing polynomial of degree 2r + 1, integrated in
    closed form. log f'(x) = log(delta + sum_k q_k(x)^2), delta = ``min_slope`` > 0 keeps the
    log-det finite. raw = [c, a_10 .. a_Kr] (1 + K (r + 1) params), with a_k0 offset by
    sqrt((1 - delta) / K) so that zero raw params are the identity. O(K r^2) per element;
    inverse: numerical (bisection + Newton, options ``**solver`` of ``solve_monotone``).
    """
    r = positive_int(degree, "sos_transformer: degree", minimum=0)
    k = positive_int(terms, "sos_transformer: terms")
    if not 0.0 < float(min_slope) < 1.0:
        raise ValueError(f"sos_transformer: min_slope must be in (0, 1), got {min_slope!r}")
    delta = float(min_slope)
    offset = np.zeros((k, r + 1))
    offset[:, 0] = math.sqrt((1.0 - delta) / k)
    exponents = np.add.outer(np.arange(r + 1), np.arange(r + 1)) + 1  # l + m + 1

    def forward(x, raw):
        c = raw[..., 0]
        a = raw[..., 1:].reshape(*raw.shape[:-1], k, r + 1) + offset.astype(raw.dtype)
        m = jnp.einsum("...kl,...km->...lm", a, a)  # coefficients of sum_k q_k^2
        # x^0 .. x^(2r+1) by integer powers (a float exponent gives 0 * log 0 = NaN in the
        # derivative of x^0 at x = 0)
        powers = jnp.stack([x**i for i in range(2 * r + 2)], axis=-1)
        integral = jnp.sum(m * powers[..., exponents] / exponents, axis=(-2, -1))
        q = jnp.sum(a * powers[..., None, : r + 1], axis=-1)  # (..., K)
        return c + delta * x + integral, jnp.log(delta + jnp.sum(q * q, axis=-1))

    return numerical_transformer(1 + k * (r + 1), forward, **solver)


def dsf_transformer(units: int = 8, spread: float = 2.0, **solver) -> Transformer:
    """Deep sigmoidal transformer (one-layer DSF of neural autoregressive flows, Huang et al. 2018).

    f(x) = logit(sum_j w_j sigmoid(a_j x + b_j)), j < M (``units``), with a_j > 0, w = softmax:
    increasing, from R onto R. log f'(x) = log(sum_j w_j a_j s_j (1 - s_j)) -
    log S - log(1 - S) (S the mixture, s_j = sigmoid(a_j x + b_j)), all in log space
    (log-sum-exp of log-sigmoids: no cancellation at large |x|). raw = [M slopes, M offsets,
    M weights] (3M), softly bounded: log a_j = 3 tanh(raw / 3), b_j = centre_j + 4 tanh(raw / 4),
    weight logits 3 tanh(raw / 3). Zero raw params give a_j = 1, w uniform and b_j spread over
    [-``spread``, ``spread``] (distinct units, so their gradients differ; f(0) = 0, a smooth
    near-identity). O(M) per element; inverse: numerical (``**solver`` of ``solve_monotone``).
    """
    m = positive_int(units, "dsf_transformer: units")
    if not float(spread) >= 0:
        raise ValueError(f"dsf_transformer: spread must be >= 0, got {spread!r}")
    centres = np.linspace(-float(spread), float(spread), m) if m > 1 else np.zeros(1)

    def forward(x, raw):
        log_a = _soft_clamp(raw[..., :m], LOG_SLOPE_BOUND)
        a = jnp.exp(log_a)
        b = _soft_clamp(raw[..., m : 2 * m], OFFSET_BOUND) + centres.astype(raw.dtype)
        log_w = jax.nn.log_softmax(_soft_clamp(raw[..., 2 * m :], LOG_WEIGHT_BOUND), axis=-1)
        u = a * x[..., None] + b
        log_s, log_1ms = jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u)
        log_mix = jax.nn.logsumexp(log_w + log_s, axis=-1)
        log_1m_mix = jax.nn.logsumexp(log_w + log_1ms, axis=-1)
        log_slope = jax.nn.logsumexp(log_w + log_a + log_s + log_1ms, axis=-1)
        return log_mix - log_1m_mix, log_slope - log_mix - log_1m_mix

    return numerical_transformer(3 * m, forward, **solver)
