"""Elementwise layers (affine, actnorm, fixed_affine, sigmoid, logit): a diagonal Jacobian, O(d) both ways."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax_lab.core import Transform, check_event, invert


def _check_params(params, shape, where):
    for name in ("shift", "log_scale"):
        if name not in params:
            raise ValueError(
                f"{where}: params need keys 'shift' and 'log_scale', got {list(params)}"
            )
        if tuple(params[name].shape) != tuple(shape):
            raise ValueError(
                f"{where}: params['{name}'] has shape {tuple(params[name].shape)}, "
                f"expected {tuple(shape)}"
            )


def _scale_shift(param_shape, count):
    """Shared f/g for affine and actnorm; ``count`` events share each param (pixels)."""

    def apply(params, x, *, context=None):
        del context
        check_event(x, x.shape, "affine")  # dtype check
        _check_params(params, param_shape(x), "affine.apply")
        z = (x - params["shift"]) * jnp.exp(-params["log_scale"])
        return z, -count(x) * jnp.sum(params["log_scale"])

    def inverse(params, z, *, context=None):
        del context
        check_event(z, z.shape, "affine")
        _check_params(params, param_shape(z), "affine.inverse")
        x = z * jnp.exp(params["log_scale"]) + params["shift"]
        return x, count(z) * jnp.sum(params["log_scale"])

    return apply, inverse


def affine() -> Transform:
    """Diagonal affine map with a positive scale by construction.

    f(x) = (x - shift) * exp(-log_scale); g(z) = z * exp(log_scale) + shift;
    log|det J_f| = -sum(log_scale). One parameter pair per event element. O(d) both ways.
    Initialised at the identity.

    Example:
        >>> t = affine(); p = t.init(jax.random.key(0), jnp.zeros(3))
        >>> z, logdet = t.apply(p, jnp.ones(3))
    """

    def init(key, x_example):
        del key
        zeros = jnp.zeros(x_example.shape, x_example.dtype)
        return {"shift": zeros, "log_scale": zeros}

    apply, inverse = _scale_shift(lambda x: x.shape, lambda x: 1)
    return Transform(init, apply, inverse)


def actnorm(eps: float = 1e-6) -> Transform:
    """Activation normalisation (Glow): per-channel (last axis) scale and shift.

    f(x) = (x - shift) * exp(-log_scale) on every position; for events of shape (..., C),
    log|det J_f| = -(prod of leading dims) * sum(log_scale). O(d) both ways.
    Identity at plain ``init``; with ``data`` (see ``fl.data_init``) shift and log_scale are set
    to the per-channel mean and log standard deviation of the batch arriving at the layer, so
    its output starts with zero mean and unit variance.
    """

    def init(key, x_example, *, data=None):
        del key
        channels = x_example.shape[-1:]
        if data is None:
            zeros = jnp.zeros(channels, x_example.dtype)
            return {"shift": zeros, "log_scale": zeros}
        flat = data.reshape(-1, channels[0]).astype(x_example.dtype)
        return {
            "shift": jnp.mean(flat, axis=0),
            "log_scale": jnp.log(jnp.std(flat, axis=0) + eps),
        }

    count = lambda x: x.size // x.shape[-1]  # noqa: E731  positions sharing one scale
    apply, inverse = _scale_shift(lambda x: x.shape[-1:], count)
    return Transform(init, apply, inverse)


# --------------------------------------------------------------------------- sigmoid / logit


def _param_free(name: str):
    """(init, check) of a layer without params: init gives ``{}``; check(params, x, where)
    refuses non-float or non-finite-dtype events and any params but ``{}`` (or None)."""

    def init(key, x_example):
        del key, x_example
        return {}

    def check(params, x, where):
        check_event(x, x.shape, where)
        if params is not None and (not isinstance(params, dict) or params):
            raise ValueError(f"{where}: {name} has no params, expected {{}}, got {params}")

    return init, check


def fixed_affine(shift: float = 0.0, scale: float = 1.0) -> Transform:
    """A constant elementwise affine map with no params (``{}``), e.g. Glow's x - 1/2.

    f(x) = (x - shift) / scale; g(z) = z scale + shift; log|det J_f| = -d log|scale| for an
    event of d elements. Any event shape. O(d) both ways.
    """
    shift, scale = float(shift), float(scale)
    if not (math.isfinite(shift) and math.isfinite(scale) and scale != 0.0):
        raise ValueError(
            f"fixed_affine: shift must be finite and scale finite and non-zero, got "
            f"shift={shift}, scale={scale}"
        )
    log_scale = math.log(abs(scale))

    init, check = _param_free("fixed_affine")

    def apply(params, x, *, context=None):
        del context
        check(params, x, "fixed_affine.apply")
        return (x - shift) / scale, jnp.asarray(-x.size * log_scale, x.dtype)

    def inverse(params, z, *, context=None):
        del context
        check(params, z, "fixed_affine.inverse")
        return z * scale + shift, jnp.asarray(z.size * log_scale, z.dtype)

    return Transform(init, apply, inverse)


def sigmoid() -> Transform:
    """Elementwise logistic sigmoid from the real line to (0, 1); no params (``{}``).

    f(x) = 1 / (1 + exp(-x)); g(z) = logit(z) = log z - log(1 - z) for z in (0, 1);
    log|det J_f| = sum(log s(1 - s)) = -sum(softplus(-x) + softplus(x)) (finite for any
    finite x, even where s rounds to 0 or 1); log|det J_g| = -sum(log z + log(1 - z)).
    Any event shape. O(d) both ways.

    Example:
        >>> t = sigmoid(); z, logdet = t.apply({}, jnp.array([0.0, 30.0]))
    """

    init, check = _param_free("sigmoid")

    def apply(params, x, *, context=None):
        del context
        check(params, x, "sigmoid.apply")
        logdet = -jnp.sum(jax.nn.softplus(-x) + jax.nn.softplus(x))
        return jax.nn.sigmoid(x), logdet

    def inverse(params, z, *, context=None):
        del context
        check(params, z, "sigmoid.inverse")
        log_z, log_1mz = jnp.log(z), jnp.log1p(-z)
        return log_z - log_1mz, -jnp.sum(log_z + log_1mz)

    return Transform(init, apply, inverse)


def logit(alpha: float = 0.0) -> Transform:
    """Elementwise logit from the domain (0, 1) to the real line, after an optional squeeze.

    f(x) = logit(s) = log s - log(1 - s), s = alpha + (1 - 2 alpha) x;
    g(y) = (sigmoid(y) - alpha) / (1 - 2 alpha);
    log|det J_f| = sum(log(1 - 2 alpha) - log s - log(1 - s)).
    alpha = 0 is ``invert(sigmoid())``; alpha in (0, 0.5) is RealNVP's and the MAF paper's
    pixel preprocessing (MAF: 1e-6), which keeps dequantised pixels x in [0, 1) off the logit's
    poles. Inputs with s outside (0, 1) give NaN or inf. No params; O(d) both ways. Use it first
    in a flow for data bounded in [0, 1).
    """
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"logit: alpha must be in [0, 0.5), got {alpha}")
    plain = invert(sigmoid())
    if alpha == 0.0:
        return plain
    scale = 1.0 - 2.0 * alpha

    def apply(params, x, *, context=None):
        y, log_det = plain.apply(params, alpha + scale * x, context=context)
        return y, log_det + x.size * math.log(scale)

    def inverse(params, y, *, context=None):
        s, log_det = plain.inverse(params, y, context=context)
        return (s - alpha) / scale, log_det - y.size * math.log(scale)

    return Transform(plain.init, apply, inverse)
