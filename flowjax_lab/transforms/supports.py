"""Bounded and positive supports: exp, softplus, tanh, power, to_interval (no params, O(d)).

Each layer's ``apply`` maps the real line (or (0, inf) for `power`) onto its range; a flow for
data on a constrained set puts the inverted layer first, so that the rest sees the real line:

    positive data:     fl.chain(fl.invert(T.softplus()), nsf.transform)      # (0, inf)^d
    data in [a, b]^d:  fl.chain(fl.invert(T.to_interval(a, b)), nsf.transform)

(``apply`` of the inverted layer is softplus^-1 or logit of (x - a) / (b - a); reverse-KL flows
on a constrained target put the layer last instead, unchanged). Inputs of an inverse outside the
layer's range give NaN: the range is a property of the data, not checked at run time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax_lab.core import Transform
from flowjax_lab.transforms.elementwise import _param_free

_LOG2 = math.log(2.0)


def _layer(name: str, f, g) -> Transform:
    """A param-free elementwise layer from ``f(x) -> (y, log dy/dx)`` and ``g(y) -> (x, log dx/dy)``."""
    init, check = _param_free(name)

    def apply(params, x, *, context=None):
        del context
        check(params, x, f"{name}.apply")
        y, ld = f(x)
        return y, jnp.sum(ld)

    def inverse(params, z, *, context=None):
        del context
        check(params, z, f"{name}.inverse")
        x, ld = g(z)
        return x, jnp.sum(ld)

    return Transform(init, apply, inverse)


def exp() -> Transform:
    """f(x) = exp(x), R -> (0, inf); g(y) = log y. log|det J_f| = sum x. O(d)."""
    return _layer("exp", lambda x: (jnp.exp(x), x), lambda y: (jnp.log(y), -jnp.log(y)))


def _softplus_inverse(y):
    """log(exp(y) - 1) = y + log(1 - exp(-y)), accurate for small and large y."""
    return y + jnp.log(-jnp.expm1(-y))


def softplus() -> Transform:
    """f(x) = log(1 + e^x), R -> (0, inf); g(y) = y + log(1 - e^-y).

    log|det J_f| = sum log sigmoid(x); log|det J_g| = -sum log sigmoid(g(y)). Linear for large x,
    so positive data with heavy right tails keep them (unlike exp). O(d).
    """

    def g(y):
        x = _softplus_inverse(y)
        return x, -jax.nn.log_sigmoid(x)

    return _layer("softplus", lambda x: (jax.nn.softplus(x), jax.nn.log_sigmoid(x)), g)


def tanh() -> Transform:
    """f(x) = tanh(x), R -> (-1, 1); g(y) = atanh(y).

    log|det J_f| = sum log(1 - tanh^2 x) = sum 2 (log 2 - x - softplus(-2x)) (finite where tanh
    rounds to +-1); log|det J_g| = -sum log1p(-y^2). O(d).
    """

    def f(x):
        return jnp.tanh(x), 2.0 * (_LOG2 - x - jax.nn.softplus(-2.0 * x))

    return _layer("tanh", f, lambda y: (jnp.arctanh(y), -jnp.log1p(-y * y)))


def power(exponent: float) -> Transform:
    """f(x) = x^p on (0, inf) -> (0, inf), p = ``exponent`` > 0; g(y) = y^(1/p).

    log|det J_f| = sum (log p + (p - 1) log x). O(d).
    """
    p = float(exponent)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"power: exponent must be a finite number > 0, got {exponent!r}")
    log_p = math.log(p)

    def f(x):
        return x**p, log_p + (p - 1.0) * jnp.log(x)

    def g(y):
        x = y ** (1.0 / p)
        return x, -(log_p + (p - 1.0) * jnp.log(x))

    return _layer("power", f, g)


def to_interval(low: float, high: float) -> Transform:
    """f(x) = low + (high - low) sigmoid(x), R -> (low, high); g(y) = logit((y - low) / (high - low)).

    log|det J_f| = sum (log(high - low) + log sigmoid(x) + log sigmoid(-x)); log|det J_g| is its
    negative at g(y), computed from u = (y - low) / (high - low) as -sum log(u (1 - u) (high -
    low)). O(d).
    """
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"to_interval: need finite low < high, got low={low!r}, high={high!r}")
    width, log_width = high - low, math.log(high - low)

    def f(x):
        ld = log_width + jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x)
        return low + width * jax.nn.sigmoid(x), ld

    def g(y):
        u = (y - low) / width
        log_u, log_1mu = jnp.log(u), jnp.log1p(-u)
        return log_u - log_1mu, -(log_width + log_u + log_1mu)

    return _layer("to_interval", f, g)
