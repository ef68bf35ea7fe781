"""Monotone transformers without a closed-form inverse: sum-of-squares polynomial, deep sigmoid,
Bernstein polynomial and the integral of a positive net (UMNN).

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


def _clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes s_k = cos(k pi / n), k = 0..n, and their Clenshaw-Curtis weights on [-1, 1]
    (all positive; exact for polynomials of degree n, spectrally accurate for analytic ones)."""
    theta = np.pi * np.arange(n + 1) / n
    weights = np.zeros(n + 1)
    v = np.ones(n - 1)
    inner = theta[1:-1]
    if n % 2 == 0:
        weights[0] = weights[n] = 1.0 / (n * n - 1)
        for k in range(1, n // 2):
            v -= 2.0 * np.cos(2 * k * inner) / (4 * k * k - 1)
        v -= np.cos(n * inner) / (n * n - 1)
    else:
        weights[0] = weights[n] = 1.0 / (n * n)
        for k in range(1, (n - 1) // 2 + 1):
            v -= 2.0 * np.cos(2 * k * inner) / (4 * k * k - 1)
    weights[1:-1] = 2.0 * v / n
    return np.cos(theta), weights


UMNN_LOG_SLOPE_BOUND = 1.0  # |log a_j| < 1: the integrand's poles stay >= 0.58 from the real line
UMNN_BOUND = 3.0  # |b_j|, |v_j| < 3


def umnn_transformer(
    units: int = 8, nodes: int = 64, bound: float = 6.0, min_slope: float = 1e-3, **solver
) -> Transformer:
    """Unconstrained monotonic transformer (UMNN, Wehenkel & Louppe 2019): the integral of a
    positive net, by Clenshaw-Curtis quadrature.

    f(x) = c_0 + int_0^x g(t) dt with g(t) = softplus(c + sum_j v_j tanh(a_j t + b_j)) +
    delta > 0 (M = ``units``) on [-B, B] (B = ``bound``), held at its end value g(+-B)
    beyond (linear tails: a fixed-node rule cannot integrate over an unbounded interval); the
    integral by the (N + 1)-point Clenshaw-Curtis rule (N = ``nodes``) on [0, u], u = x
    clipped to [-B, B]: f(x) = c_0 + (u / 2) sum_k w_k g(u (1 + s_k) / 2) + g(u) (x - u).
    log f'(x) = log g(u), exact for the integral; the quadrature of this smooth integrand
    (|log a_j| < 1, |b_j|, |v_j| < 3, so its poles stay away from the real line) converges
    exponentially in N, so f and log f' agree to its accuracy (measured in float64 on
    |x| < 6 at unit-scale raw params: 2e-5 at 32 nodes, 3e-10 at 64, 5e-14 at 96; a wider
    ``bound`` needs more nodes). raw = [c_0, c, M slopes, M offsets,
    M weights] (3M + 2), softly bounded; zero raw params give g = 1 (c offset so that
    softplus(c) + delta = 1), f(0) = 0: the identity, the M units spread over [-2, 2] so that
    their gradients differ. O(M N) per element; inverse: numerical (``**solver``).
    """
    m = positive_int(units, "umnn_transformer: units")
    n = positive_int(nodes, "umnn_transformer: nodes", minimum=2)
    if not 0.0 < float(min_slope) < 1.0:
        raise ValueError(f"umnn_transformer: min_slope must be in (0, 1), got {min_slope!r}")
    if not (math.isfinite(float(bound)) and float(bound) > 0):
        raise ValueError(f"umnn_transformer: bound must be a finite number > 0, got {bound!r}")
    b_max, delta = float(bound), float(min_slope)
    c_offset = math.log(math.expm1(1.0 - delta))
    centres = np.linspace(-2.0, 2.0, m) if m > 1 else np.zeros(1)
    s, w = _clenshaw_curtis(n)

    def integrand(t, raw):
        """g(t) for t (..., K) and raw (..., 3M + 2) -> (..., K)."""
        c = c_offset + _soft_clamp(raw[..., 1], 5.0)
        a = jnp.exp(_soft_clamp(raw[..., 2 : 2 + m], UMNN_LOG_SLOPE_BOUND))
        b = _soft_clamp(raw[..., 2 + m : 2 + 2 * m], UMNN_BOUND) + centres.astype(raw.dtype)
        v = _soft_clamp(raw[..., 2 + 2 * m :], UMNN_BOUND)
        h = jnp.tanh(a[..., None, :] * t[..., None] + b[..., None, :])  # (..., K, M)
        return jax.nn.softplus(c[..., None] + jnp.sum(v[..., None, :] * h, axis=-1)) + delta

    def forward(x, raw):
        u = jnp.where(jnp.abs(x) <= b_max, x, jnp.sign(x) * b_max)  # not clip (grad 1/2 at B)
        t = u[..., None] * (1.0 + s.astype(x.dtype)) / 2.0  # (..., N + 1)
        integral = u / 2.0 * jnp.sum(w.astype(x.dtype) * integrand(t, raw), axis=-1)
        slope = integrand(u[..., None], raw)[..., 0]
        return raw[..., 0] + integral + slope * (x - u), jnp.log(slope)

    return numerical_transformer(3 * m + 2, forward, **solver)
