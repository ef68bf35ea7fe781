"""Unnormalised log-densities for reverse-KL training, one event at a time.

A `Target(log_prob, dim, log_z)` maps ONE event z of shape (dim,) to a scalar log p~(z), written
in jax so it jits, vmaps (batch with `jax.vmap(target.log_prob)`) and differentiates.
`log_z` is the exact log normaliser log Z = log int p~(z) dz when known in closed form (0.0 for
the normalised targets) and None otherwise. With it, reverse KL is
KL(q || p) = E_q[log q(z) - log p~(z)] + log Z.

Rezende & Mohamed (2015) energies U1-U4 (log p~ = -U) have no closed-form Z. U2-U4 are not even
integrable on R^2 (their mass is constant along z1), so, as is conventional, their Z is taken on
the plotting box [-4, 4]^2. `log_z_by_quadrature` gives (midpoint rule on [-4, 4]^2, the same
to 1e-6 for n = 500 ... 4000 points per axis), stored in `QUADRATURE_LOG_Z`:

  u1: log Z = 1.8775    u2: log Z = 2.0821    u3: log Z = 2.6417    u4: log Z = 2.6846

(U1 is proper and loses < 1e-6 outside the box. U2 has the closed form
log(8 * 0.4 sqrt(2 pi)) = 2.0821 on the box; U3 is log(8 * 2 * 0.35 sqrt(2 pi)) = 2.6417.)

Example:
  >>> target = TARGETS["banana"]()
  >>> jax.vmap(target.log_prob)(jnp.zeros((5, 2))).shape
  (5,)
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from flowjax_lab.data.mixtures import gaussian_mixture

_LOG_2PI = math.log(2.0 * math.pi)


class Target(NamedTuple):
    """An unnormalised density on R^dim.

    Attributes:
      log_prob: `(dim,) -> ()`, the log of the unnormalised density p~ of one event.
      dim: event dimension.
      log_z: exact log int p~ when known in closed form (0.0 if normalised), else None.
    """

    log_prob: Callable[[jax.Array], jax.Array]
    dim: int
    log_z: float | None


def _safe_norm(z: jax.Array) -> jax.Array:
    """|z| with gradient 0 (not NaN) at z = 0."""
    sq = jnp.sum(z**2)
    positive = sq > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _w1(z1: jax.Array) -> jax.Array:
    return jnp.sin(2.0 * jnp.pi * z1 / 4.0)


def _w2(z1: jax.Array) -> jax.Array:
    return 3.0 * jnp.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1: jax.Array) -> jax.Array:
    return 3.0 * jax.nn.sigmoid((z1 - 1.0) / 0.3)


def _log_prob_u1(z: jax.Array) -> jax.Array:
    ring = 0.5 * ((_safe_norm(z) - 2.0) / 0.4) ** 2
    modes = jnp.stack([-0.5 * ((z[0] - 2.0) / 0.6) ** 2, -0.5 * ((z[0] + 2.0) / 0.6) ** 2])
    return -ring + logsumexp(modes)


def _log_prob_u2(z: jax.Array) -> jax.Array:
    return -0.5 * ((z[1] - _w1(z[0])) / 0.4) ** 2


def _log_prob_u3(z: jax.Array) -> jax.Array:
    a = z[1] - _w1(z[0])
    return logsumexp(jnp.stack([-0.5 * (a / 0.35) ** 2, -0.5 * ((a + _w2(z[0])) / 0.35) ** 2]))


def _log_prob_u4(z: jax.Array) -> jax.Array:
    a = z[1] - _w1(z[0])
    return logsumexp(jnp.stack([-0.5 * (a / 0.4) ** 2, -0.5 * ((a + _w3(z[0])) / 0.35) ** 2]))


def u1() -> Target:
    """Rezende & Mohamed U1, a ring split in two: log p~ = -U1(z),

    U1(z) = 0.5 ((|z| - 2) / 0.4)^2 - log(exp(-0.5 ((z1 - 2) / 0.6)^2)
            + exp(-0.5 ((z1 + 2) / 0.6)^2)), the last term by logsumexp. log Z ~ 1.8775.
    """
    return Target(_log_prob_u1, 2, None)


def u2() -> Target:
    """Rezende & Mohamed U2, a sine wave: U2(z) = 0.5 ((z2 - w1(z)) / 0.4)^2,

    w1(z) = sin(2 pi z1 / 4). Improper on R^2; on [-4, 4]^2, log Z ~ 2.0821.
    """
    return Target(_log_prob_u2, 2, None)


def u3() -> Target:
    """Rezende & Mohamed U3, a sine wave and a bump: with w2(z) = 3 exp(-0.5 ((z1 - 1)/0.6)^2),

    U3(z) = -log(exp(-0.5 ((z2 - w1) / 0.35)^2) + exp(-0.5 ((z2 - w1 + w2) / 0.35)^2)).
    Improper on R^2; on [-4, 4]^2, log Z ~ 2.6417.
    """
    return Target(_log_prob_u3, 2, None)


def u4() -> Target:
    """Rezende & Mohamed U4, a sine wave and a step: with w3(z) = 3 sigmoid((z1 - 1) / 0.3),

    U4(z) = -log(exp(-0.5 ((z2 - w1) / 0.4)^2) + exp(-0.5 ((z2 - w1 + w3) / 0.35)^2)).
    Improper on R^2; on [-4, 4]^2, log Z ~ 2.6846.
    """
    return Target(_log_prob_u4, 2, None)


def funnel(dim: int = 2, sigma: float = 3.0) -> Target:
    """Neal's funnel, normalised (log Z = 0): z = (v, x_1, ..., x_{dim-1}),

    v ~ N(0, sigma^2), x_i | v ~ N(0, e^v), so
    log p(z) = log N(v; 0, sigma^2) + sum_i [-x_i^2 e^{-v} / 2 - v / 2 - log(2 pi) / 2].
    """
    if dim < 2:
        raise ValueError(f"funnel needs dim >= 2, got dim={dim}")

    def log_prob(z: jax.Array) -> jax.Array:
        v, x = z[0], z[1:]
        log_p_v = -0.5 * (v / sigma) ** 2 - math.log(sigma) - 0.5 * _LOG_2PI
        log_p_x = jnp.sum(-0.5 * x**2 * jnp.exp(-v) - 0.5 * v - 0.5 * _LOG_2PI)
        return log_p_v + log_p_x

    return Target(log_prob, dim, 0.0)


def banana(sigma1: float = 2.0, sigma2: float = 0.5, curvature: float = 0.25) -> Target:
    """A twisted Gaussian (Haario et al. 1999) in 2-D, normalised (log Z = 0).

    z1 ~ N(0, sigma1^2), z2 | z1 ~ N(curvature (z1^2 - sigma1^2), sigma2^2): the volume-preserving
    twist z2 -> z2 - b (z1^2 - sigma1^2) of N(0, diag(sigma1^2, sigma2^2)). The defaults keep
    most mass in [-4, 4]^2 (E z2 = 0); Haario's classic case is sigma1=10, sigma2=1, b=0.03.
    """

    def log_prob(z: jax.Array) -> jax.Array:
        shifted = z[1] - curvature * (z[0] ** 2 - sigma1**2)
        return (
            -0.5 * (z[0] / sigma1) ** 2
            - 0.5 * (shifted / sigma2) ** 2
            - math.log(sigma1 * sigma2)
            - _LOG_2PI
        )

    return Target(log_prob, 2, 0.0)


def gaussian_mixture_target(
    means: jax.Array = ((-2.5, 0.0), (2.5, 0.0), (0.0, 2.5)),
    scales_or_covs: jax.Array = 0.5,
    weights: jax.Array | None = (0.5, 0.3, 0.2),
) -> Target:
    """A normalised Gaussian mixture (log Z = 0); arguments as in `data.gaussian_mixture`.

    The defaults are three well-separated unequal modes in 2-D, a test of mode-seeking.
    """
    mixture = gaussian_mixture(means, scales_or_covs, weights)
    return Target(mixture.log_prob, int(mixture.means.shape[1]), 0.0)


def gaussian_target(mean: jax.Array, cov: jax.Array) -> Target:
    """N(mean, cov), normalised (log Z = 0).

    Example:
      >>> target = gaussian_target(*correlated_gaussian(jax.random.key(0), 3))
    """
    mixture = gaussian_mixture([mean], [cov], None)
    return Target(mixture.log_prob, int(mixture.means.shape[1]), 0.0)


def correlated_gaussian_target(dim: int = 2, correlation: float = 0.9) -> Target:
    """N(0, C) with equicorrelation C = (1 - rho) I + rho 1 1^T, normalised (log Z = 0).

    C is positive definite for -1 / (dim - 1) < rho < 1; its condition number is
    (1 + (dim - 1) rho) / (1 - rho).
    """
    if not -1.0 / max(dim - 1, 1) < correlation < 1.0:
        raise ValueError(
            f"correlation must be in (-1/(dim-1), 1) = ({-1.0 / max(dim - 1, 1)}, 1) "
            f"for dim={dim}, got {correlation}"
        )
    cov = (1.0 - correlation) * np.eye(dim) + correlation * np.ones((dim, dim))
    return gaussian_target(np.zeros(dim), cov)


def log_z_by_quadrature(
    log_prob: Callable[[jax.Array], jax.Array],
    lo: float | jax.Array,
    hi: float | jax.Array,
    n: int,
    dim: int = 2,
) -> float:
    """log int_box exp(log_prob(z)) dz by the midpoint rule on an n^dim grid.

    The box is prod_i [lo_i, hi_i] (scalars broadcast to all dim axes); the estimate is
    logsumexp_grid log_prob + sum_i log h_i with h_i = (hi_i - lo_i) / n. Rows of the grid are
    evaluated with `jax.lax.map` (memory O(n^(dim-1))) and combined in float64 on the host.
    Cost: n^dim calls of log_prob.

    Args:
      log_prob: `(dim,) -> ()` log-density of one event.
      lo: lower corner of the box, scalar or (dim,).
      hi: upper corner of the box, scalar or (dim,).
      n: grid points per axis.
      dim: event dimension.

    Returns:
      The log integral as a Python float.
    """
    lo = np.broadcast_to(np.asarray(lo, np.float64), (dim,))
    hi = np.broadcast_to(np.asarray(hi, np.float64), (dim,))
    widths = (hi - lo) / n
    axes = [lo[i] + widths[i] * (np.arange(n) + 0.5) for i in range(dim)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(n, -1, dim)
    row_log_sums = jax.lax.map(
        lambda row: logsumexp(jax.vmap(log_prob)(row)), jnp.asarray(grid, jnp.float32)
    )
    row_log_sums = np.asarray(row_log_sums, np.float64)
    return float(np.logaddexp.reduce(row_log_sums) + np.sum(np.log(widths)))


QUADRATURE_LOG_Z = {"u1": 1.8775, "u2": 2.0821, "u3": 2.6417, "u4": 2.6846}
"""log Z of U1-U4 on [-4, 4]^2 from `log_z_by_quadrature(..., -4.0, 4.0, n)`, n >= 500, to 1e-4."""

TARGETS = {
    "u1": u1,
    "u2": u2,
    "u3": u3,
    "u4": u4,
    "funnel": funnel,
    "banana": banana,
    "gaussian_mixture": gaussian_mixture_target,
    "correlated_gaussian": correlated_gaussian_target,
}
"""Target factories by name; each is callable with no arguments."""
