"""Permutations of the last axis: |det J| = 1, O(d) both ways, nothing trained."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.core import Transform, as_key, check_event


def _check_rank(x, where):
    if x.ndim < 1:
        raise ValueError(f"{where}: expected an event with at least one axis, got a scalar")
    check_event(x, x.shape, where)


def permute(indices) -> Transform:
    """A fixed permutation of the last axis: f(x) = x[..., indices], g(z)[..., indices] = z.

    ``indices`` is a permutation of range(d), held in the closure (not trained). O(d).
    """
    perm = np.asarray(indices)
    if perm.ndim != 1 or sorted(perm.tolist()) != list(range(perm.size)):
        raise ValueError(f"permute: indices must be a permutation of range(d), got {indices}")
    inv = np.argsort(perm)

    def init(key, x_example):
        del key
        if x_example.shape[-1:] != perm.shape:
            raise ValueError(
                f"permute: a permutation of {perm.size} indices, but the event's last axis "
                f"has size {x_example.shape[-1:]}"
            )
        return {}

    def apply(params, x, *, context=None):
        _check_rank(x, "permute")
        if x.shape[-1] != perm.size:
            raise ValueError(f"permute: expected last axis {perm.size}, got {x.shape[-1]}")
        return x[..., perm], jnp.zeros((), x.dtype)

    def inverse(params, z, *, context=None):
        _check_rank(z, "permute")
        if z.shape[-1] != perm.size:
            raise ValueError(f"permute: expected last axis {perm.size}, got {z.shape[-1]}")
        return z[..., inv], jnp.zeros((), z.dtype)

    return Transform(init, apply, inverse)


def reverse_permutation() -> Transform:
    """Reverse the last axis: f(x) = x[..., ::-1] = g(x). No params, O(d).

    Written as a gather with constant indices rather than XLA's ``rev``: on CPU a flow whose
    conditioners read the reversed vector ran ~1.5x slower with ``rev`` (measured at batch
    10,000 with 2 x 128 MLPs; the gradients cost the same either way).
    """

    def init(key, x_example):
        del key, x_example
        return {}

    def flip(params, x, *, context=None):
        _check_rank(x, "reverse_permutation")
        return x[..., np.arange(x.shape[-1] - 1, -1, -1)], jnp.zeros((), x.dtype)

    return Transform(init, flip, flip)


def random_permutation() -> Transform:
    """A permutation of the last axis drawn from the init key. O(d), |det J| = 1.

    f(x) = x[..., perm]; g(z) = z[..., inverse_perm]. The indices live in params (so each copy
    inside ``stack`` draws its own) as integer arrays: integer leaves are fixed structure, never
    trained. ``fl.partition`` splits them off, and ``fl.fit`` only optimises float leaves.
    """

    def init(key, x_example):
        d = x_example.shape[-1]
        perm = jax.random.permutation(as_key(key), d)
        return {"permutation": perm, "inverse_permutation": jnp.argsort(perm)}

    def _indices(params, name, x, where):
        _check_rank(x, where)
        if name not in params:
            raise ValueError(f"{where}: params need key '{name}', got {list(params)}")
        idx = params[name]
        if idx.shape != x.shape[-1:] or not jnp.issubdtype(idx.dtype, jnp.integer):
            raise ValueError(
                f"{where}: expected params['{name}'] as integers of shape {x.shape[-1:]}, got "
                f"{idx.dtype}{list(idx.shape)}"
            )
        return jax.lax.stop_gradient(idx)

    def apply(params, x, *, context=None):
        idx = _indices(params, "permutation", x, "random_permutation.apply")
        return x[..., idx], jnp.zeros((), x.dtype)

    def inverse(params, z, *, context=None):
        idx = _indices(params, "inverse_permutation", z, "random_permutation.inverse")
        return z[..., idx], jnp.zeros((), z.dtype)

    return Transform(init, apply, inverse)
