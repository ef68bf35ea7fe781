"""A pure training step, blackjax style, and the compiled chunk of steps that runs it.

``train_step(state, batch, key, setup) -> (state, StepInfo)`` is a plain function of named
tuples: nothing is jitted here and nothing is counted; ``functools.partial(train_step,
setup=setup)`` (what `make_step` returns) is the ``(state, batch, key)`` kernel that
`make_chunk` loops over and jits, and that a user may jit and call directly.

Step s:
  1. picks the objective's weight row w of the stage active at ``state.step``;
  2. maps the batch rows by ``setup.batch_map`` on key fold_in(key, BATCH_MAP_KEY);
  3. computes sum_t w_t loss_t(params, batch, key) over the used terms (a term whose weight
     is zero in some stage runs under ``lax.cond``: no work while it is off) and its gradient;
  4. applies the optimizer. Cost: one forward and backward pass of each active term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flowjax_lab.core import combine
from flowjax_lab.training.checks import param_dtype
from flowjax_lab.training.losses import Batch
from flowjax_lab.training.objective import TERMS, Objective

BATCH_MAP_KEY = 0xDE0  # fold_in(step key, BATCH_MAP_KEY): the step's batch-map draws


class TrainState(NamedTuple):
    """The carried state: trainable params, optimizer state, the index of the next step."""

    params: Any
    opt_state: Any
    step: jax.Array


class StepInfo(NamedTuple):
    """What a step reports: total loss, each used term (NaN while its weight is 0), the global
    gradient norm, the weight row (len(TERMS),) it used, and ``nfe``: the vector-field
    evaluations per data row of the terms that count them (a CNF's "mle"), NaN for none."""

    loss: jax.Array
    terms: jax.Array
    grad_norm: jax.Array
    weights: jax.Array
    nfe: jax.Array


def counts_evaluations(losses: dict) -> bool:
    """Whether any of ``losses`` (a StepSetup's) reports field evaluations."""
    return any(getattr(loss, "counts_evaluations", False) for loss in losses.values())


def _value_and_count(loss):
    """``loss`` as ``(value, evaluations)``, evaluations NaN for a term that counts none."""
    if getattr(loss, "counts_evaluations", False):

        def counted(*args):
            value, nfe = loss(*args)
            return value, jnp.asarray(nfe, jnp.float32)

        return counted
    return lambda *args: (loss(*args), jnp.full((), jnp.nan, jnp.float32))


class StepSetup(NamedTuple):
    """What a step closes over (fixed for a ``fit`` call).

    losses: {term: loss(params, batch, key)} for the objective's used terms. fixed: the
    non-trainable params (combined with the trainable ones before each loss). batch_map: one
    ``(key, x) -> x`` or None. batch_sharding: None, or the sharding the batch is constrained to
    on a mesh.
    """

    losses: dict
    optimizer: optax.GradientTransformation
    objective: Objective
    fixed: Any
    batch_map: Callable | None = None
    batch_sharding: Any = None


def _total_loss(trainable, batch: Batch, key, w, setup: StepSetup):
    params = combine(trainable, setup.fixed)
    always = setup.objective.always
    nan = jnp.full((), jnp.nan, jnp.float32)
    off = lambda *args: (jnp.zeros((), param_dtype(trainable)), nan)  # noqa: E731
    total, parts, counts = 0.0, [], []
    for term, loss in setup.losses.items():
        wi, counted = w[TERMS.index(term)], _value_and_count(loss)
        if term in always:
            value, nfe = counted(params, batch, key)
            parts.append(value)
        else:  # skip the work while its weight is zero (both branches compiled once)
            value, nfe = jax.lax.cond(wi > 0, counted, off, params, batch, key)
            parts.append(jnp.where(wi > 0, value, jnp.nan))
        counts.append(jax.lax.stop_gradient(nfe))
        total = total + wi * value
    counts = jnp.stack(counts)
    nfe = jnp.where(jnp.all(jnp.isnan(counts)), jnp.nan, jnp.nansum(counts))
    return total, (jnp.stack(parts), nfe)


def train_step(state: TrainState, batch: Batch, key, setup: StepSetup):
    """One optimizer step; returns ``(TrainState, StepInfo)``. Pure; jit it (or `make_chunk`)."""
    starts, weights = (jnp.asarray(a) for a in setup.objective.arrays())
    w = weights[jnp.searchsorted(starts, state.step, side="right") - 1]
    if setup.batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, setup.batch_sharding)
    if setup.batch_map is not None and batch.x is not None:
        batch = batch._replace(x=setup.batch_map(jax.random.fold_in(key, BATCH_MAP_KEY), batch.x))
    (loss, (parts, nfe)), grads = jax.value_and_grad(_total_loss, has_aux=True)(
        state.params, batch, key, w, setup
    )
    updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    info = StepInfo(loss, parts, optax.tree.norm(grads), w, nfe)
    return TrainState(params, opt_state, state.step + 1), info


def make_step(setup: StepSetup) -> Callable:
    """The ``(state, batch, key) -> (state, StepInfo)`` kernel of ``setup``."""
    return lambda state, batch, key: train_step(state, batch, key, setup)


class Feed(NamedTuple):
    """A chunk's data: ``idx`` (length, b) row indices into the whole data set ``x`` (n, ...)
    and per-row ``context`` (one device), or ``idx`` None and ``x`` / ``context`` the chunk's
    rows gathered on the host, (length, b, ...) (a mesh). None stays None."""

    idx: Any = None
    x: Any = None
    context: Any = None


def step_batch(feed: Feed, i) -> Batch:
    """The `Batch` of the chunk's i-th step."""
    take = (lambda a: a[feed.idx[i]]) if feed.idx is not None else (lambda a: a[i])
    return Batch(*(None if a is None else take(a) for a in (feed.x, feed.context)))


def make_chunk(step: Callable, length: int, num_used: int, out_sharding=None) -> Callable:
    """A jitted ``chunk(state, step_key, feed, stop) -> (state, StepInfo of (length, ...))``.

    Runs steps state.step .. stop - 1 (at most ``length``) in one ``fori_loop`` with a traced
    trip count (one compile for every length); step s gets key fold_in(step_key, s) and the
    rows ``step_batch(feed, s - start)``. Info rows past ``stop`` stay NaN (weights 0).
    ``out_sharding``: the replicated sharding of every output on a mesh, or None.
    """

    def chunk(state: TrainState, step_key, feed: Feed, stop):
        start, dtype = state.step, param_dtype(state.params)
        infos = StepInfo(
            jnp.full((length,), jnp.nan, dtype),
            jnp.full((length, num_used), jnp.nan, dtype),
            jnp.full((length,), jnp.nan, dtype),
            jnp.zeros((length, len(TERMS)), jnp.float32),
            jnp.full((length,), jnp.nan, jnp.float32),
        )

        def body(s, carry):
            state, infos = carry
            state, info = step(state, step_batch(feed, s - start), jax.random.fold_in(step_key, s))
            infos = jax.tree.map(lambda buf, v: buf.at[s - start].set(v), infos, info)
            return state, infos

        return jax.lax.fori_loop(start, stop, body, (state, infos))

    return jax.jit(chunk) if out_sharding is None else jax.jit(chunk, out_shardings=out_sharding)
