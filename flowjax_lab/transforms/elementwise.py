"""Elementwise affine layers: a diagonal Jacobian, O(d) both ways."""

from __future__ import annotations

import jax.numpy as jnp

from flowjax_lab.core import Transform, check_event


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
