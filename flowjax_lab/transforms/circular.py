"""Flows on the circle and the torus: the circular rational-quadratic spline (Rezende et al. 2020).

An angle lives on the circle S^1 = [-pi, pi) with -pi and pi the same point. A circle
diffeomorphism that fixes -pi is a monotone map of [-pi, pi] onto itself with f(-pi) = -pi,
f(pi) = pi and **equal slopes at both ends** (so it is smooth across the identified point);
a rotation then moves the fixed point. The circular transformer is

    f(x) = wrap(RQS(wrap(x)) + shift),        wrap(v) = v - 2 pi floor((v + pi) / (2 pi)),

with the RQS on [-pi, pi] (K bins) whose two end derivatives are one learned value, and
log f'(x) = log RQS'(wrap(x)) (the rotation and the wrap have slope 1). g(y) =
RQS^-1(wrap(y - shift)), exact, one pass. Inputs are angles: any real x is read modulo 2 pi,
and every output lies in [-pi, pi). On the torus T^d a coupling's conditioner must see the
angles through periodic features (`angle_features`: [cos x_A, sin x_A]), so that the map is
continuous on the torus, not only on the box [-pi, pi)^d.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax_lab.transforms.spline import (
    Transformer,
    _check_spline_args,
    rational_quadratic_spline,
    rational_quadratic_spline_inverse,
)

Array = jax.Array
PI = math.pi


def wrap_angle(v: Array) -> Array:
    """v modulo 2 pi, in [-pi, pi) (also after rounding: a result that float error puts on or
    past pi, or below -pi, is moved by 2 pi, so the spline never sees it as outside its
    interval)."""
    w = v - 2.0 * PI * jnp.floor((v + PI) / (2.0 * PI))
    w = jnp.where(w >= PI, w - 2.0 * PI, w)
    return jnp.where(w < -PI, w + 2.0 * PI, w)


def angle_features(x: Array) -> Array:
    """Periodic conditioner inputs for angles: (k,) -> (2k,) = [cos x, sin x]."""
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=-1)


def circular_spline_transformer(bins: int = 8) -> Transformer:
    """The circular RQS transformer on [-pi, pi): a `Transformer` for ``coupling`` (and ``maf``).

    raw = [shift, K widths, K heights, K derivatives] (3K + 1 per angle): the RQS knots and
    interior derivatives as in `rational_quadratic_spline` with bound pi, the first of the K
    derivatives shared by both ends (the circle's one point -pi = pi), then a rotation by
    ``shift``. f, g and log f' as in the module docstring; O(K) per angle both ways, exact
    inverse. All-zero raw params give the identity. Inputs are read modulo 2 pi (no error: an
    angle outside [-pi, pi) is the same point as its wrap), outputs lie in [-pi, pi).

    Example:
        >>> t = coupling(circular_spline_transformer(4), (16,), features=angle_features)
        >>> p = t.init(jax.random.key(0), jnp.zeros(2))
    """
    bins, _ = _check_spline_args(bins, PI)

    def split(raw):
        shift, rest = raw[..., 0], raw[..., 1:]
        widths, heights = rest[..., :bins], rest[..., bins : 2 * bins]
        boundary, derivatives = rest[..., 2 * bins], rest[..., 2 * bins + 1 :]
        return shift, (widths, heights, derivatives), boundary

    def forward(x, raw):
        shift, knots, boundary = split(raw)
        y, log_det = rational_quadratic_spline(wrap_angle(x), *knots, PI, boundary)
        return wrap_angle(y + shift), log_det

    def inverse(y, raw):
        shift, knots, boundary = split(raw)
        x, log_det = rational_quadratic_spline_inverse(wrap_angle(y - shift), *knots, PI, boundary)
        return wrap_angle(x), log_det

    return Transformer(3 * bins + 1, forward, inverse)
