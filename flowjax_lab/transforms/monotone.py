"""Monotone transformers without a closed-form inverse: sum-of-squares polynomial, deep sigmoid
and Bernstein polynomial.

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


def bernstein_transformer(degree: int = 8, bound: float = 3.0, **solver) -> Transformer:
    """Bernstein-polynomial transformer (BPF; Ramasinghe et al. 2021, as in zuko's BPF) on
    [-B, B] with linear tails.

    With u = (x + B) / (2B) and n = ``degree``, f(x) = -B + 2B sum_{k<=n} theta_k b_{k,n}(u)
    (b_{k,n}(u) = C(n, k) u^k (1 - u)^(n - k)), theta_0 = 0, theta_k = delta_0 + ... +
    delta_{k-1}, delta = softmax(3 tanh(raw / 3)) (n raw params): increasing, f(-B) = -B and
    f(B) = B. f'(x) = n sum_{k<n} delta_k b_{k,n-1}(u) >= n min_k delta_k > 0. Outside [-B, B]
    f is the linear extension with the end slopes n delta_0 and n delta_{n-1} (C^1 at +-B, a
    bijection of R; values outside the interval are therefore allowed, not an error). Zero raw
    params give delta = 1/n, theta_k = k/n: the identity. O(n) per element; inverse: numerical
    (``**solver`` of ``solve_monotone``).
    """
    n = positive_int(degree, "bernstein_transformer: degree")
    if not float(bound) > 0:
        raise ValueError(f"bernstein_transformer: bound must be > 0, got {bound!r}")
    b = float(bound)
    binom = np.array([math.comb(n - 1, k) for k in range(n)], dtype=np.float64)  # C(n - 1, k)

    def forward(x, raw):
        delta = jax.nn.softmax(_soft_clamp(raw, LOG_WEIGHT_BOUND), axis=-1)  # (..., n)
        inside = jnp.abs(x) <= b
        u = (jnp.where(inside, x, 0.0) + b) / (2.0 * b)
        # the degree n - 1 basis b_{k,n-1}(u), k < n (integer powers: finite derivative at 0, 1)
        basis = binom.astype(raw.dtype) * jnp.stack([u**k * (1.0 - u) ** (n - 1 - k) for k in range(n)], axis=-1)
        slope = n * jnp.sum(delta * basis, axis=-1)
        # f(u) = -B + 2B sum_k theta_k b_{k,n}(u) = -B + 2B int_0^u n sum_k delta_k b_{k,n-1}:
        # the integral of b_{k,n-1} from 0 to u is (1/n) sum_{j>k} b_{j,n}(u)
        cdf = _bernstein_tail_sums(u, n)  # (..., n): entry k = sum_{j>k} b_{j,n}(u)
        y_in = -b + 2.0 * b * jnp.sum(delta * cdf, axis=-1)
        lo, hi = n * delta[..., 0], n * delta[..., -1]
        y = jnp.where(inside, y_in, jnp.where(x < 0, -b + lo * (x + b), b + hi * (x - b)))
        log_slope = jnp.log(jnp.where(inside, slope, jnp.where(x < 0, lo, hi)))
        return y, log_slope

    return numerical_transformer(n, forward, **solver)


def _bernstein_tail_sums(u: Array, n: int) -> Array:
    """(..., n): entry k = sum_{j = k+1}^{n} C(n, j) u^j (1 - u)^(n - j), k < n."""
    binom = np.array([math.comb(n, j) for j in range(n + 1)], dtype=np.float64)
    terms = jnp.stack([u**j * (1.0 - u) ** (n - j) for j in range(n + 1)], axis=-1)
    terms = terms * binom.astype(u.dtype)
    # the sums over j > k as a matmul with a constant 0/1 matrix
    above = (np.arange(n + 1)[:, None] > np.arange(n)[None, :]).astype(np.float64)
    return terms @ above.astype(u.dtype)
