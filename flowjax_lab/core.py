"""The core: a transform is a NamedTuple of three pure functions, and its combinators.

Flows (a transform with a base distribution) are in `flowjax_lab.flow`.

Direction (the lecture's): ``apply`` is f, data -> noise, returning log|det df/dx|; ``inverse`` is
g = f^-1, noise -> data, returning log|det dg/dz|. Events are unbatched; batches come from vmap.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from flowjax_lab.checks import positive_int

Array = jax.Array
Params = Any  # a pytree of arrays


class InitFn(Protocol):
    def __call__(self, key: Array, x_example: Array, *, data: Array | None = None) -> Params:
        """Params for events shaped like ``x_example`` (one event, used for shape and dtype).

        ``data`` (a batch of events, optional) is for data-dependent initialisation (actnorm);
        layers that do not use it may leave it out of their signature.
        """


class ApplyFn(Protocol):
    def __call__(
        self, params: Params, x: Array, *, context: Array | None = None
    ) -> tuple[Array, Array]:
        """f: one data event -> (noise event, log|det df/dx| as a scalar)."""


class InverseFn(Protocol):
    def __call__(
        self, params: Params, z: Array, *, context: Array | None = None
    ) -> tuple[Array, Array]:
        """g = f^-1: one noise event -> (data event, log|det dg/dz| as a scalar)."""


class Transform(NamedTuple):
    """An invertible map as three pure functions, like optax's ``GradientTransformation``."""

    init: InitFn
    apply: ApplyFn
    inverse: InverseFn


# --------------------------------------------------------------------------- small helpers


def as_key(key: Array) -> Array:
    """Accept new-style ``jax.random.key`` keys and legacy ``PRNGKey`` uint32 arrays alike."""
    if not isinstance(key, jax.Array) or not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jnp.asarray(key)
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise ValueError(
                f"expected a jax.random key or a legacy PRNGKey (uint32[2]), got "
                f"{key.dtype}{list(key.shape)}"
            )
        key = jax.random.wrap_key_data(key)
    return key


def check_event(x: Array, shape: tuple[int, ...], where: str) -> None:
    """Raise a ValueError at trace time unless ``x`` is one float event of ``shape``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{where}: expected an array event of shape {shape}, got {type(x)}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(
            f"{where}: expected one event of shape {tuple(shape)}, got shape {tuple(x.shape)}"
            " (transforms take unbatched events: use jax.vmap for batches)"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{where}: expected a floating-point event, got dtype {x.dtype}")


def check_vector_event(x: Array, where: str, min_dim: int = 1) -> int:
    """Raise a ValueError unless ``x`` is one float event of shape (d,), d >= min_dim."""
    if not hasattr(x, "ndim") or x.ndim != 1:
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(
            f"{where}: expected one event of shape (d,), got {got} "
            "(transforms take unbatched events: use jax.vmap for batches)"
        )
    check_event(x, x.shape, where)
    if x.shape[0] < min_dim:
        raise ValueError(
            f"{where}: needs at least {min_dim} dimensions, got an event of shape {x.shape}"
        )
    return x.shape[0]


def is_trainable(leaf: Any) -> bool:
    """Float leaves are trained; integer leaves (e.g. permutation indices) are fixed structure."""
    return jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)


def partition(params: Params) -> tuple[Params, Params]:
    """Split params into (trainable, fixed) trees with ``None`` holes, like ``eqx.partition``.

    Take gradients and run optimizers on ``trainable`` only; ``combine`` puts them back.
    """
    trainable = jax.tree.map(lambda p: p if is_trainable(p) else None, params)
    fixed = jax.tree.map(lambda p: None if is_trainable(p) else p, params)
    return trainable, fixed


def combine(trainable: Params, fixed: Params) -> Params:
    """Inverse of ``partition``."""
    return jax.tree.map(
        lambda a, b: b if a is None else a, trainable, fixed, is_leaf=lambda v: v is None
    )


def _takes(init, name: str) -> bool:
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _init(
    t: Transform, key: Array, x: Array, data: Array | None, context: Array | None = None
) -> Params:
    """``t.init``, passing ``data`` (and its per-row ``context``, shape (n, c)) to the layers
    whose init takes them (data-dependent init; combinators take both and pass them on)."""
    if data is None or not _takes(t.init, "data"):
        return t.init(key, x)
    if context is not None and _takes(t.init, "context"):
        return t.init(key, x, data=data, context=context)
    return t.init(key, x, data=data)


def _output_example(t: Transform, params: Params, x: Array) -> Array:
    """Zeros shaped like ``t.apply``'s output on ``x`` (by ``jax.eval_shape``, no compute).

    A conditional layer cannot be traced without its context; such layers are taken to preserve
    the event shape (all conditional layers here do).
    """
    try:
        out = jax.eval_shape(lambda p_, x_: t.apply(p_, x_)[0], params, x)
    except ValueError:
        return jnp.zeros(x.shape, x.dtype)
    return jnp.zeros(out.shape, out.dtype)


def _batched(fn, params, x, context):
    """vmap ``fn(params, event, context=...)`` over a batch; context is per event or None."""
    if context is None:
        return jax.vmap(lambda xi: fn(params, xi))(x)
    return jax.vmap(lambda xi, ci: fn(params, xi, context=ci))(x, context)


# --------------------------------------------------------------------------- combinators


def chain(*transforms: Transform) -> Transform:
    """Composition f = f_K o ... o f_1 in the order written; log-dets add.

    ``apply`` runs t1 then t2 ...; ``inverse`` runs them in reverse. Params are a tuple, one
    entry per transform. Shape-changing transforms work: each init sees its input's shape,
    inferred with ``jax.eval_shape``. Cost: the sum of the parts.
    """
    if not transforms:
        raise ValueError("chain needs at least one transform")
    n = len(transforms)

    def init(key, x_example, *, data=None, context=None):
        keys = jax.random.split(as_key(key), n)
        x, params = x_example, []
        for t, k in zip(transforms, keys):
            p = _init(t, k, x, data, context)
            params.append(p)
            if data is not None:
                data = _batched(t.apply, p, data, context)[0]
            x = _output_example(t, p, x)
        return tuple(params)

    def _check(params):
        if not isinstance(params, (tuple, list)) or len(params) != n:
            got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(f"chain of {n} transforms: expected a tuple of {n} params, got {got}")

    def apply(params, x, *, context=None):
        _check(params)
        total = jnp.zeros((), x.dtype)
        for t, p in zip(transforms, params):
            x, ld = t.apply(p, x, context=context)
            total = total + ld
        return x, total

    def inverse(params, z, *, context=None):
        _check(params)
        total = jnp.zeros((), z.dtype)
        for t, p in zip(reversed(transforms), reversed(tuple(params))):
            z, ld = t.inverse(p, z, context=context)
            total = total + ld
        return z, total

    return Transform(init, apply, inverse)


def invert(t: Transform) -> Transform:
    """Swap the directions: apply becomes g and inverse becomes f (e.g. IAF from MAF)."""
    return Transform(t.init, t.inverse, t.apply)


def stack(t: Transform, n: int) -> Transform:
    """n independent copies of a shape-preserving ``t``, run one after another by ``lax.scan``.

    Params are ``t``'s params with a leading axis of size n (vmapped init, so per-copy random
    structure such as random permutations differs). The body is traced once: compile time does
    not grow with n. Cost: n times that of ``t``.
    """
    n = positive_int(n, "stack: n (the number of copies)")

    def init(key, x_example, *, data=None, context=None):
        keys = jax.random.split(as_key(key), n)
        p0 = jax.eval_shape(lambda k: t.init(k, x_example), keys[0])
        out = _output_example(t, p0, x_example)
        if out.shape != x_example.shape:
            raise ValueError(
                f"stack needs a shape-preserving transform: {x_example.shape} -> {out.shape}"
            )
        if data is None:
            return jax.vmap(lambda k: t.init(k, x_example))(keys)

        def body(batch, k):  # data-dependent init runs the copies in order
            p = _init(t, k, x_example, batch, context)
            return _batched(t.apply, p, batch, context)[0], p

        return jax.lax.scan(body, data, keys)[1]

    def _check(params):
        sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(params)}
        if sizes - {n}:
            raise ValueError(f"stack of {n}: every param needs a leading axis of {n}, got {sizes}")

    def apply(params, x, *, context=None):
        _check(params)

        def body(carry, p):
            y, ld = t.apply(p, carry[0], context=context)
            return (y, carry[1] + ld), None

        return jax.lax.scan(body, (x, jnp.zeros((), x.dtype)), params)[0]

    def inverse(params, z, *, context=None):
        _check(params)

        def body(carry, p):
            y, ld = t.inverse(p, carry[0], context=context)
            return (y, carry[1] + ld), None

        return jax.lax.scan(body, (z, jnp.zeros((), z.dtype)), params, reverse=True)[0]

    return Transform(init, apply, inverse)
