"""The core: a transform is a NamedTuple of three pure functions; flows add a base distribution.

Direction (the lecture's): ``apply`` is f, data -> noise, returning log|det df/dx|; ``inverse`` is
g = f^-1, noise -> data, returning log|det dg/dz|. Events are unbatched; batches come from vmap.
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import Any, NamedTuple, Protocol

import distrax
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


# --------------------------------------------------------------------------- flows


class Flow(NamedTuple):
    """A transform with a base distribution. Flow-level functions take batches of events.

    log p(x) = log p_base(f(x)) + log|det J_f(x)|; sampling runs g on base samples.
    """

    transform: Transform
    base: Any  # a distrax distribution over one event
    event_shape: tuple[int, ...]
    init: Any
    log_prob: Any
    sample: Any
    sample_and_log_prob: Any


def standard_normal(event_shape: tuple[int, ...], dtype=None) -> distrax.Distribution:
    """A standard normal distrax distribution over events of ``event_shape``."""
    dtype = dtype or jnp.zeros(()).dtype  # float64 when x64 is on, else float32
    zeros = jnp.zeros(event_shape, dtype)
    return distrax.Independent(distrax.Normal(zeros, jnp.ones_like(zeros)), len(event_shape))


def _split_batch(x, event_shape, where):
    """(*batch, *event) -> ((-1, *event), batch_shape) with a clear error on a shape mismatch."""
    k = len(event_shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k :]) != tuple(event_shape):
        raise ValueError(
            f"{where}: expected events of shape {tuple(event_shape)} (as (*batch, "
            f"*{tuple(event_shape)})), got an array of shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{where}: expected floating-point data, got dtype {x.dtype}")
    batch = tuple(x.shape[: x.ndim - k])
    return x.reshape((math.prod(batch), *event_shape)), batch


def _context_for(context, batch, n, where):
    if context is None:
        return None
    context = jnp.asarray(context)
    if context.ndim == 1:  # one context for the whole batch
        return jnp.broadcast_to(context, (n, context.shape[0]))
    if tuple(context.shape[:-1]) != tuple(batch):
        raise ValueError(
            f"{where}: context needs one vector per event: expected shape "
            f"{(*batch, context.shape[-1])} or ({context.shape[-1]},), got {tuple(context.shape)}"
        )
    return context.reshape(n, context.shape[-1])


class TrainableBase(NamedTuple):
    """A base distribution with params, trained with the flow's (see ``fl.bases``).

    ``init(key, dtype) -> params`` (a pytree of arrays) and ``distribution(params) -> a distrax
    distribution over one event of ``event_shape``. A flow made with one has params
    ``{"transform": ..., "base": ...}``; flows with a fixed distrax base keep the transform's
    params as they are.
    """

    event_shape: tuple[int, ...]
    init: Any
    distribution: Any


def base_distribution(flow: Flow, params: Params):
    """The flow's base as a distrax distribution at ``params`` (fixed bases ignore them)."""
    if isinstance(flow.base, TrainableBase):
        return flow.base.distribution(params["base"])
    return flow.base


def _carry_base_params(transform: Transform, base: TrainableBase) -> Transform:
    """``transform`` on params ``{"transform": p, "base": q}``: init draws both, apply and inverse
    read p only (the base's params ride along, so every transform-level tool sees one tree)."""

    def check(params, where):
        if not isinstance(params, dict) or set(params) != {"transform", "base"}:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                f"{where}: a flow with a trainable base has params with keys ['base', "
                f"'transform'], got {got}"
            )
        return params["transform"]

    def init(key, x_example, *, data=None, context=None):
        k_t, k_b = jax.random.split(as_key(key))
        return {
            "transform": _init(transform, k_t, x_example, data, context),
            "base": base.init(k_b, x_example.dtype),
        }

    def apply(params, x, *, context=None):
        return transform.apply(check(params, "apply"), x, context=context)

    def inverse(params, z, *, context=None):
        return transform.inverse(check(params, "inverse"), z, context=context)

    return Transform(init, apply, inverse)


def make_flow(
    transform: Transform,
    base: distrax.Distribution | TrainableBase | None = None,
    *,
    event_shape: tuple[int, ...] | None = None,
) -> Flow:
    """A flow from a transform and a base distribution over one event.

    ``base`` defaults to a standard normal over ``event_shape``; give one of the two. The base's
    event shape is the noise shape; the data event shape is the same (shape-preserving flows).
    A `TrainableBase` (``fl.bases.student_t``, ...) makes the params ``{"transform": ...,
    "base": ...}`` and ``flow.transform`` the transform on those params.
    """
    if base is None:
        if event_shape is None:
            raise ValueError("make_flow needs a base distribution or an event_shape")
        base = standard_normal(tuple(event_shape))
    shape = tuple(base.event_shape)
    if event_shape is not None and tuple(event_shape) != shape:
        raise ValueError(f"event_shape {tuple(event_shape)} != base event shape {shape}")
    trainable = isinstance(base, TrainableBase)
    if trainable:
        transform = _carry_base_params(transform, base)

    def dist(params):
        return base.distribution(params["base"]) if trainable else base

    def init(key, x_example=None, *, data=None, context=None):
        if x_example is None:
            x_example = jnp.zeros(shape, jnp.zeros(()).dtype if trainable else base.dtype)
        if tuple(x_example.shape) != shape:
            raise ValueError(f"init: expected one event of shape {shape}, got {x_example.shape}")
        return _init(transform, key, x_example, data, context)

    def log_prob(params, x, context=None):
        xf, batch = _split_batch(jnp.asarray(x), shape, "log_prob")
        ctx = _context_for(context, batch, xf.shape[0], "log_prob")
        z, logdet = _batched(transform.apply, params, xf, ctx)
        return (dist(params).log_prob(z) + logdet).reshape(batch)

    def sample_and_log_prob(params, key, n, context=None):
        n = _num_samples(n, "sample_and_log_prob")
        z, log_pz = dist(params).sample_and_log_prob(seed=as_key(key), sample_shape=(n,))
        ctx = _context_for(context, (n,), n, "sample")
        x, logdet = _batched(transform.inverse, params, z, ctx)
        return x, log_pz - logdet

    def sample(params, key, n, context=None):
        n = _num_samples(n, "sample")
        z = dist(params).sample(seed=as_key(key), sample_shape=(n,))
        ctx = _context_for(context, (n,), n, "sample")
        return _batched(transform.inverse, params, z, ctx)[0]

    return Flow(transform, base, shape, init, log_prob, sample, sample_and_log_prob)


def sample_at_temperature(
    flow: Flow, params: Params, key: Array, n: int, temperature: float, context=None
) -> Array:
    """n samples x = g(T z), z ~ base: sampling at temperature T (Glow, Kingma and Dhariwal 2018).

    T = 1 is ``flow.sample``; T < 1 shrinks the base noise towards its mode, trading diversity
    for typical-looking samples (for a standard normal base, T z ~ N(0, T^2 I)). In a multiscale
    flow with learned priors every level's noise is scaled, as in Glow. Cost: ``flow.sample``.

    Raises:
      ValueError: a temperature that is not a positive finite number.
    """
    t = float(temperature)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"sample_at_temperature: temperature must be > 0, got {temperature!r}")
    n = _num_samples(n, "sample_at_temperature")
    z = t * base_distribution(flow, params).sample(seed=as_key(key), sample_shape=(n,))
    ctx = _context_for(context, (n,), n, "sample_at_temperature")
    return _batched(flow.transform.inverse, params, z, ctx)[0]


def _num_samples(n, where: str) -> int:
    """``n`` as a Python int >= 0, or a TypeError/ValueError that names it."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(
            f"{where}: n must be an integer number of samples, got {n!r} "
            "(for a shaped batch, sample n = prod(shape) and reshape)"
        ) from None
    if n < 0:
        raise ValueError(f"{where}: n must be >= 0, got {n}")
    return n


def data_init(flow: Flow, key: Array, batch: Array, context: Array | None = None) -> Params:
    """``flow.init`` with data-dependent initialisation (actnorm) from a first batch of data.

    Each data-dependent layer is set from the statistics of the batch as it arrives at that layer,
    so the flow's output on ``batch`` starts standardised, layer by layer. ``context`` (one
    vector, or one per row of ``batch``) is what a conditional flow's layers see on the way.
    """
    xf, batch_shape = _split_batch(jnp.asarray(batch), flow.event_shape, "data_init")
    ctx = _context_for(context, batch_shape, xf.shape[0], "data_init")
    return flow.init(key, xf[0], data=xf, context=ctx)
