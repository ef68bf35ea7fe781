"""Flows: a transform with a base distribution (fixed distrax, or a `TrainableBase`).

log p(x) = log p_base(f(x)) + log|det J_f(x)|; sampling runs g = f^-1 on base samples.
Flow-level functions take batches of events; the transforms they wrap take one event.
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp

from flowjax_lab.core import Array, Params, Transform, _batched, _init, as_key


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


def check_context_given(flow: Flow, params: Params, context, where: str) -> None:
    """Raise a ValueError if ``flow`` is conditional (its layers need a context) and ``context``
    is None. Flows do not record a context_dim, so this traces ``log_prob`` on one abstract
    event (``jax.eval_shape``: no compute); a layer built with context_dim > 0 refuses None."""
    if context is not None:
        return
    floats = [a for a in jax.tree.leaves(params) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]
    dtype = jnp.result_type(floats[0]) if floats else jnp.zeros(()).dtype
    x = jax.ShapeDtypeStruct((1, *flow.event_shape), dtype)
    try:
        jax.eval_shape(lambda p, x_: flow.log_prob(p, x_), params, x)
    except ValueError as err:
        if "context" not in str(err):
            raise
        raise ValueError(
            f"{where}: this flow is conditional (a layer was built with context_dim > 0) and "
            f"needs context=, one context vector; got context=None ({err})"
        ) from None


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
    # optional (params, key, n) -> (z, log p(z), w): n draws with weights w summing to 1 such
    # that sum_j w_j F(z_j) is an unbiased, fully reparametrised estimate of E[F(z)] (a
    # mixture's per-component draws); reverse KL uses it. None: plain draws, w_j = 1 / n.
    weighted_sample: Any = None


def _weighted_samples(flow: Flow, params: Params, key, n: int, context=None):
    """(x, log q(x), w): n flow samples with weights summing to 1 for E_q[F] ~ sum_j w_j F(x_j).

    Plain draws (w_j = 1 / n) unless the flow's base has a ``weighted_sample`` (a mixture: draws
    stratified by component, w_j = pi_k / n_k, so the mixture weights get exact gradients).
    """
    base = flow.base
    if not (isinstance(base, TrainableBase) and base.weighted_sample is not None):
        x, log_q = flow.sample_and_log_prob(params, key, n, context)
        return x, log_q, jnp.full((x.shape[0],), 1.0 / max(x.shape[0], 1), log_q.dtype)
    n = _num_samples(n, "reverse_kl")
    z, log_pz, w = base.weighted_sample(params["base"], as_key(key), n)
    ctx = _context_for(context, (n,), n, "sample")
    x, logdet = _batched(flow.transform.inverse, params, z, ctx)
    return x, log_pz - logdet, w


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

    solve = getattr(transform.apply, "_cnf_solve", None)
    if solve is not None:  # a CNF's solves with their counts and integrals (cnf_solve, fl.fit)
        counted = transform.apply._cnf_counted
        apply._cnf_solve = lambda params, x, **kw: solve(check(params, "cnf_solve"), x, **kw)
        apply._cnf_counted = lambda params, x, context=None, key=None: counted(
            check(params, "apply"), x, context, key
        )
    init._carries_base_params = True  # make_flow refuses to wrap it a second time
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
    "base": ...}`` and ``flow.transform`` the transform on those params. That wrapped
    ``flow.transform`` is refused here (its base's params would be dropped): rebuild with
    ``make_flow(layers, flow.base)`` (the same holds inside a ``chain``: reuse the layers, not
    ``flow.transform``).
    """
    if base is None:
        if event_shape is None:
            raise ValueError("make_flow needs a base distribution or an event_shape")
        base = standard_normal(tuple(event_shape))
    shape = tuple(base.event_shape)
    if event_shape is not None and tuple(event_shape) != shape:
        raise ValueError(f"event_shape {tuple(event_shape)} != base event shape {shape}")
    if getattr(transform.init, "_carries_base_params", False):
        raise ValueError(
            "make_flow: this transform is the .transform of a flow with a trainable base (its "
            "params are {'transform', 'base'}); to reuse that flow's layers and base, build the "
            "new flow from the layers themselves: make_flow(chain(...), flow.base)"
        )
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

    T = 1 is ``flow.sample``; T < 1 shrinks the base noise towards its mode m, z_T = m + T (z - m),
    trading diversity for typical-looking samples (for a standard normal base, z_T ~ N(0, T^2 I);
    for a trainable base, m is its learned loc). In a multiscale
    flow with learned priors every level's noise is scaled, as in Glow. Cost: ``flow.sample``.

    Raises:
      ValueError: a temperature that is not a positive finite number.
    """
    t = float(temperature)
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"sample_at_temperature: temperature must be > 0, got {temperature!r}")
    n = _num_samples(n, "sample_at_temperature")
    base = base_distribution(flow, params)
    centre = _base_mode(base)
    z = centre + t * (base.sample(seed=as_key(key), sample_shape=(n,)) - centre)
    ctx = _context_for(context, (n,), n, "sample_at_temperature")
    return _batched(flow.transform.inverse, params, z, ctx)[0]


def _base_mode(base) -> Array:
    """The base's mode (the centre that temperature sampling shrinks towards), 0 if unknown."""
    try:
        return jnp.asarray(base.mode())
    except (NotImplementedError, AttributeError):
        return jnp.zeros(base.event_shape)


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
