"""Classic 2-D toy densities (FFJORD / nflows definitions), sampled in pure jax.

Every sampler has the signature `fn(key, n) -> (n, 2) float32` and is jittable with `n` static,
e.g. `jax.jit(two_moons, static_argnums=1)`. Samples are i.i.d.: where FFJORD gives each mode an
equal share of the batch, here every point draws its mode independently with equal probability.
The mass of every set lies roughly in [-4, 4]^2.

Exact log-densities are given where the density has a closed form (`eight_gaussians_log_prob`,
`checkerboard_log_prob`, `rings_log_prob`); they take `(..., 2)` and return `(...)`. Two moons,
pinwheel and two spirals are noise convolutions with no closed form.

Example:
  >>> x = two_moons(jax.random.key(0), 512)           # (512, 2) float32
  >>> lp = eight_gaussians_log_prob(eight_gaussians(jax.random.key(1), 8))  # (8,)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import i0e, logsumexp

from flowjax_lab.core import as_key

_LOG_2PI = math.log(2.0 * math.pi)

# Eight Gaussians: FFJORD puts centres at radius 4 with noise sd 0.5 and divides by 1.414.
_EIGHT_RADIUS = 4.0 / math.sqrt(2.0)
_EIGHT_STD = 0.5 / math.sqrt(2.0)
_EIGHT_ANGLES = np.arange(8) * (2.0 * math.pi / 8.0)
_EIGHT_CENTERS = (
    _EIGHT_RADIUS * np.stack([np.cos(_EIGHT_ANGLES), np.sin(_EIGHT_ANGLES)], -1)
).astype(np.float32)

# Rings: FFJORD's four concentric circles, radii (1, 0.8, 0.55, 0.25) scaled by 3, noise sd 0.08.
_RING_RADII = 3.0 * np.array([1.0, 0.8, 0.55, 0.25], np.float32)
_RING_STD = 0.08

_CHECKERBOARD_AREA = 32.0  # 8 squares of side 2 in [-4, 4]^2.


def two_moons(key: jax.Array, n: int) -> jax.Array:
    """Two interleaved half circles (sklearn `make_moons(noise=0.1)`, then `2x + (-1, -0.2)`).

    t ~ U[0, pi); upper moon (cos t, sin t), lower moon (1 - cos t, 0.5 - sin t), each with
    probability 1/2; add N(0, 0.1^2 I); then x -> 2x + (-1, -0.2), so the noise sd is 0.2.

    Args:
      key: jax random key.
      n: number of samples (static under jit).

    Returns:
      (n, 2) float32 samples.
    """
    key_t, key_moon, key_noise = jax.random.split(as_key(key), 3)
    t = jnp.pi * jax.random.uniform(key_t, (n,), jnp.float32)
    upper = jax.random.bernoulli(key_moon, 0.5, (n,))
    outer = jnp.stack([jnp.cos(t), jnp.sin(t)], -1)
    inner = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], -1)
    x = jnp.where(upper[:, None], outer, inner)
    x = x + 0.1 * jax.random.normal(key_noise, (n, 2), jnp.float32)
    return 2.0 * x + jnp.array([-1.0, -0.2], jnp.float32)


def eight_gaussians(key: jax.Array, n: int) -> jax.Array:
    """Equal mixture of 8 isotropic Gaussians on a circle.

    x = c_k + s eps, k ~ U{0..7}, c_k = r (cos(k pi/4), sin(k pi/4)), r = 2 sqrt 2, s = 1/(2 sqrt 2)
    (FFJORD's radius 4 and sd 0.5, divided by sqrt 2). Density: `eight_gaussians_log_prob`.

    Args:
      key: jax random key.
      n: number of samples (static under jit).

    Returns:
      (n, 2) float32 samples.
    """
    key_k, key_noise = jax.random.split(as_key(key))
    k = jax.random.randint(key_k, (n,), 0, 8)
    noise = _EIGHT_STD * jax.random.normal(key_noise, (n, 2), jnp.float32)
    return jnp.asarray(_EIGHT_CENTERS)[k] + noise


def eight_gaussians_log_prob(x: jax.Array) -> jax.Array:
    """log p(x) = logsumexp_k log N(x; c_k, s^2 I) - log 8, for x of shape (..., 2)."""
    sq = jnp.sum((x[..., None, :] - _EIGHT_CENTERS) ** 2, -1)  # (..., 8)
    log_comp = -0.5 * sq / _EIGHT_STD**2 - 2.0 * math.log(_EIGHT_STD) - _LOG_2PI
    return logsumexp(log_comp, -1) - math.log(8.0)


def checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Uniform on the 8 "black" squares of a 4x4 board of side-2 squares covering [-4, 4]^2.

    FFJORD: x1 ~ U[-2, 2), x2 ~ U[0, 1) - 2 B + (floor(x1) mod 2) with B ~ Bernoulli(1/2),
    then both scaled by 2. The support is {floor(x1/2) + floor(x2/2) even}, area 32.

    Args:
      key: jax random key.
      n: number of samples (static under jit).

    Returns:
      (n, 2) float32 samples.
    """
    key_1, key_2, key_b = jax.random.split(as_key(key), 3)
    x1 = jax.random.uniform(key_1, (n,), jnp.float32, -2.0, 2.0)
    shift = 2.0 * jax.random.bernoulli(key_b, 0.5, (n,)).astype(jnp.float32)
    x2 = jax.random.uniform(key_2, (n,), jnp.float32) - shift + jnp.mod(jnp.floor(x1), 2.0)
    return 2.0 * jnp.stack([x1, x2], -1)


def checkerboard_log_prob(x: jax.Array) -> jax.Array:
    """log p(x) = -log 32 on the support of `checkerboard`, -inf elsewhere; x of shape (..., 2)."""
    inside = jnp.all((x >= -4.0) & (x < 4.0), -1)
    cells = jnp.floor(x / 2.0)
    black = jnp.mod(cells[..., 0] + cells[..., 1], 2.0) == 0.0
    return jnp.where(inside & black, -math.log(_CHECKERBOARD_AREA), -jnp.inf)


def pinwheel(key: jax.Array, n: int) -> jax.Array:
    """Five curved arms (FFJORD / Johnson et al. 2016 pinwheel).

    f = (1 + 0.3 e1, 0.1 e2), e ~ N(0, I); arm k ~ U{0..4}; angle a = 2 pi k / 5 + 0.25 exp(f1);
    x = 2 (f1 cos a + f2 sin a, -f1 sin a + f2 cos a).

    Args:
      key: jax random key.
      n: number of samples (static under jit).

    Returns:
      (n, 2) float32 samples.
    """
    key_k, key_f = jax.random.split(as_key(key))
    arm = jax.random.randint(key_k, (n,), 0, 5)
    f = jax.random.normal(key_f, (n, 2), jnp.float32) * jnp.array([0.3, 0.1], jnp.float32)
    f1, f2 = f[:, 0] + 1.0, f[:, 1]
    angle = arm * (2.0 * math.pi / 5.0) + 0.25 * jnp.exp(f1)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return 2.0 * jnp.stack([f1 * cos + f2 * sin, -f1 * sin + f2 * cos], -1)


def rings(key: jax.Array, n: int) -> jax.Array:
    """Four concentric noisy circles of radii 3 * (1, 0.8, 0.55, 0.25), noise sd 0.08.

    x = R_k (cos t, sin t) + 0.08 eps, k ~ U{0..3}, t ~ U[0, 2 pi). Density: `rings_log_prob`.

    Args:
      key: jax random key.
      n: number of samples (static under jit).

    Returns:
      (n, 2) float32 samples.
    """
    key_k, key_t, key_noise = jax.random.split(as_key(key), 3)
    radius = jnp.asarray(_RING_RADII)[jax.random.randint(key_k, (n,), 0, 4)]
    t = 2.0 * math.pi * jax.random.uniform(key_t, (n,), jnp.float32)
    noise = _RING_STD * jax.random.normal(key_noise, (n, 2), jnp.float32)
    return radius[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], -1) + noise


def rings_log_prob(x: jax.Array) -> jax.Array:
    """Exact log-density of `rings`, x of shape (..., 2).

    A uniform circle of radius R convolved with N(0, s^2 I) is the Rice density
    p(x) = exp(-(r^2 + R^2) / 2s^2) I0(r R / s^2) / (2 pi s^2), r = |x|; computed stably as
    -(r - R)^2 / 2s^2 + log i0e(r R / s^2) - log(2 pi s^2), then averaged over the 4 rings.
    """
    r = jnp.sqrt(jnp.sum(x**2, -1))[..., None]  # (..., 1)
    s2 = _RING_STD**2
    log_comp = (
        -0.5 * (r - _RING_RADII) ** 2 / s2
        + jnp.log(i0e(r * _RING_RADII / s2))
        - _LOG_2PI
        - math.log(s2)
    )
    return logsumexp(log_comp, -1) - math.log(4.0)


def two_spirals(key: jax.Array, n: int) -> jax.Array:
    """Two interleaved spirals (FFJORD "2spirals").

    t = sqrt(u) * 3 pi, u ~ U[0, 1); d = (-t cos t + 0.5 u1, t sin t + 0.5 u2), u1, u2 ~ U[0, 1);
    x = +-d / 3 (sign ~ Bernoulli(1/2)) + N(0, 0.1^2 I).

    Args:
      key: jax random key.
      n: number of samples (static under jit).

    Returns:
      (n, 2) float32 samples.
    """
    key_t, key_u, key_sign, key_noise = jax.random.split(as_key(key), 4)
    t = jnp.sqrt(jax.random.uniform(key_t, (n,), jnp.float32)) * (3.0 * math.pi)
    jitter = 0.5 * jax.random.uniform(key_u, (n, 2), jnp.float32)
    d = jnp.stack([-jnp.cos(t) * t, jnp.sin(t) * t], -1) + jitter
    sign = jnp.where(jax.random.bernoulli(key_sign, 0.5, (n,)), 1.0, -1.0)[:, None]
    return sign * d / 3.0 + 0.1 * jax.random.normal(key_noise, (n, 2), jnp.float32)


TOY_2D = {
    "two_moons": two_moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "rings": rings,
    "two_spirals": two_spirals,
}
"""Every 2-D toy sampler by name: `fn(key, n) -> (n, 2) float32`."""

TOY_2D_LOG_PROB = {
    "eight_gaussians": eight_gaussians_log_prob,
    "checkerboard": checkerboard_log_prob,
    "rings": rings_log_prob,
}
"""Exact log-densities of the toy sets that have a closed form: `fn((..., 2)) -> (...)`."""
