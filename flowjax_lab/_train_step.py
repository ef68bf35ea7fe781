"""The pieces of ``fit`` that run on the device: objective specs, the per-term losses, the
validation loss, input checks, epoch shuffling and the compiled chunk of steps."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_lab.core import Flow, combine
from flowjax_lab.objectives import forward_kl, reverse_kl, uniform_dequantize_pixels

VAE_TERMS = ("elbo", "iwae", "iwae_dreg")
"""Latent-variable terms (a ``fl.vae.VAE`` on data): negative ELBO, negative IWAE-k (plain or
DReG gradient). In a spec, {"iwae": k} gives the number of importance samples k, not a weight."""

TERMS = ("mle", "reverse_kl", "reverse_kl_stl", *VAE_TERMS)
"""Objective terms: forward KL on data, reverse KL on base samples (``_stl``: stick the landing),
and the VAE bounds."""

SAMPLE_TERMS = ("iwae", "iwae_dreg")


def _schedule(objective) -> list[tuple[int, dict, str]]:
    """An objective spec as [(start, {term: value}, where)], its structure checked."""
    if isinstance(objective, (str, dict)):
        entries = [(0, objective, "")]
    elif not isinstance(objective, (list, tuple)) or not objective:
        raise ValueError(
            f"unknown objective {objective!r}: give one of {list(TERMS)}, a dict of weights or "
            "a schedule [(start_step, objective), ...]"
        )
    else:
        entries = []
        for i, item in enumerate(objective):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(
                    f"objective schedule entry {i}: expected (start_step, spec), got {item!r}"
                )
            entries.append((int(item[0]), item[1], f" (schedule entry {i})"))
        starts = [e[0] for e in entries]
        if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(
                f"objective schedule starts must begin at 0 and increase, got {starts}"
            )
    out = []
    for start, spec, where in entries:
        if isinstance(spec, str) and spec in SAMPLE_TERMS:
            raise ValueError(
                f"objective {spec!r}{where} needs its number of importance samples: give "
                f"{{{spec!r}: k}}"
            )
        if isinstance(spec, str):
            spec = {spec: 1.0}
        if not isinstance(spec, dict) or not spec:
            raise ValueError(
                f"objective{where}: expected a name or a dict of weights, got {spec!r}"
            )
        for name in spec:
            if name not in TERMS:
                raise ValueError(f"unknown objective {name!r}{where}; choose from {list(TERMS)}")
        out.append((start, spec, where))
    return out


def parse_objective(objective) -> tuple[np.ndarray, np.ndarray]:
    """An objective spec as (start steps (S,), weights (S, len(TERMS))).

    Accepts a term name, a dict {term: weight}, or a schedule [(start_step, name_or_dict), ...]
    starting at step 0 with increasing starts. For "iwae" / "iwae_dreg" the dict value is the
    number of samples k (see `objective_samples`) and the weight is 1.
    """
    starts, rows = [], []
    for start, spec, where in _schedule(objective):
        row = np.zeros(len(TERMS), np.float32)
        for name, w in spec.items():
            if name in SAMPLE_TERMS:
                w = 1.0
            elif not isinstance(w, numbers.Real) or not np.isfinite(w) or w < 0:
                raise ValueError(f"objective weight for {name!r}{where} must be >= 0, got {w!r}")
            row[TERMS.index(name)] = w
        if not row.any():
            raise ValueError(f"objective{where}: all weights are zero in {spec!r}")
        starts.append(start)
        rows.append(row)
    return np.asarray(starts, np.int32), np.stack(rows)


def objective_samples(objective) -> dict[str, int]:
    """{term: k} for the IWAE terms of a spec, e.g. {"iwae": 50} for objective={"iwae": 50}.

    k must be an integer >= 1 and the same wherever a term appears in a schedule.
    """
    samples: dict[str, int] = {}
    for _, spec, where in _schedule(objective):
        for name, k in spec.items():
            if name not in SAMPLE_TERMS:
                continue
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError(
                    f"objective {name!r}{where}: the value is the number of importance samples "
                    f"k, an integer >= 1, got {k!r}"
                )
            if samples.setdefault(name, int(k)) != int(k):
                raise ValueError(
                    f"objective {name!r}{where}: k = {k} differs from k = {samples[name]} "
                    "elsewhere in the schedule (one k per term)"
                )
    return samples


def check_rows(x, event_shape, name: str, dtype) -> jax.Array:
    """(n, *event_shape) finite float rows as a numpy array of ``dtype``, else a ValueError."""
    x = np.asarray(x)
    if x.ndim != 1 + len(event_shape) or tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name}: dimension mismatch: the flow's events have shape {tuple(event_shape)}, so "
            f"{name} should be (n, *{tuple(event_shape)}), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: has no rows")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point data, got dtype {x.dtype}")
    bad = ~np.isfinite(x).reshape(x.shape[0], -1)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name}: {int(bad.sum())} NaN/inf values in {rows.size} rows; the first is row "
            f"{int(rows[0])}"
        )
    return np.asarray(x, dtype)


def check_target(flow: Flow, params, target_log_prob: Callable, key, context, n: int = 256):
    """ValueError unless ``target_log_prob`` maps events to scalars, finite somewhere on q."""
    x = flow.sample(params, jax.random.fold_in(key, 0x7FFFFFFF), n, context)
    try:
        lp = jax.vmap(target_log_prob)(x)
    except Exception as err:
        raise ValueError(f"target_log_prob failed on events of shape {x.shape[1:]}: {err}") from err
    if lp.shape != (n,):
        raise ValueError(
            f"target_log_prob must map one event to a scalar, got shape {lp.shape[1:]}"
        )
    if not np.isfinite(np.asarray(lp)).any():
        raise ValueError(
            f"target_log_prob is NaN/inf for all {n} samples of the initial flow: check its "
            "support and the flow's event shape"
        )


class EpochShuffler:
    """Row indices for steps: epoch e is a permutation of range(n) seeded by (key, e).

    Step s uses rows perm_e[i b : (i + 1) b] with e, i = divmod(s, n // b), so batches depend
    only on (key, s). Drawn on the host (numpy, O(n) per epoch, no device sort) and sent to the
    device as a (length, b) int32 array per chunk.
    """

    def __init__(self, key, n: int, batch: int):
        self.seed = [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]
        self.n, self.batch, self.per_epoch = n, batch, max(n // batch, 1)
        self._cache: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([*self.seed, epoch])
            self._cache = (epoch, rng.permutation(self.n).astype(np.int32))
        return self._cache[1]

    def indices(self, start: int, length: int) -> np.ndarray:
        epochs, i = np.divmod(np.arange(start, start + length), self.per_epoch)
        out = np.empty((length, self.batch), np.int32)
        for epoch in np.unique(epochs):
            batches = self._perm(int(epoch))[: self.per_epoch * self.batch]
            mask = epochs == epoch
            out[mask] = batches.reshape(self.per_epoch, self.batch)[i[mask]]
        return out


DEQUANTIZE_KEY = 0xDE0  # fold_in(step key, DEQUANTIZE_KEY): the step's dequantisation noise


def term_losses(
    flow: Flow,
    target_log_prob: Callable | None,
    batch: int,
    context=None,
    dequantize=None,
    preprocess: Callable | None = None,
) -> dict:
    """The objective terms as ``{term: loss(params, x, ctx, key) -> scalar}``, one per TERMS.

    ``x``/``ctx`` are the step's data rows (None without data); ``key`` is the step's key for
    base samples; ``batch`` base samples per step and ``context`` (one vector) for reverse KL.
    ``dequantize``: None, or the pixel levels L of integer-pixel rows, dequantised afresh at
    each step from fold_in(key, DEQUANTIZE_KEY) (`uniform_dequantize_pixels`) before the
    MLE term, then mapped by ``preprocess`` (a fixed function of the batch, or None).
    """

    def mle(p, x, c, k):
        if dequantize is not None:
            x = uniform_dequantize_pixels(jax.random.fold_in(k, DEQUANTIZE_KEY), x, dequantize)
        if preprocess is not None:
            x = preprocess(x)
        return forward_kl(flow)(p, x, c)

    return {
        "mle": mle,
        "reverse_kl": lambda p, x, c, k: reverse_kl(flow, target_log_prob)(p, k, batch, context),
        "reverse_kl_stl": lambda p, x, c, k: reverse_kl(flow, target_log_prob, True)(
            p, k, batch, context
        ),
    }


def validation_loss(flow: Flow) -> Callable:
    """``loss(params, x, ctx) -> scalar``: the held-out loss ``fit`` validates with (mean NLL)."""
    return lambda p, x, c: forward_kl(flow)(p, x, c)


def make_chunk(fixed, optimizer, losses: dict, starts, weights, *, length, shard=None):
    """A jitted ``chunk(tr, opt_state, step_key, feed, start, stop)`` running steps in one loop.

    Runs steps start .. stop - 1 (stop - start <= length) in one compiled loop. Step s draws
    base samples from fold_in(step_key, s), takes its data rows from ``feed`` (see
    ``step_rows``) and weights the ``losses`` (from ``term_losses``) by the schedule row active
    at s. Returns (tr, opt_state, (loss, term losses (NaN where a term's weight is 0), grad
    norm, weights)) with one row per step. ``shard``: None, or ``(batch_sharding,
    replicated_sharding)`` on a mesh: each step's rows are constrained to the batch sharding and
    every output is replicated, so XLA reduces the gradients over the data axis. Also returns
    the terms used and a list whose first entry counts the traces.
    """
    used = [t for i, t in enumerate(TERMS) if weights[:, i].any()]
    always = {t for t in used if weights[:, TERMS.index(t)].all()}
    starts_j, weights_j = jnp.asarray(starts), jnp.asarray(weights)
    traces = [0]

    def total_loss(tr, x, c, key, w):
        p = combine(tr, fixed)
        total, parts = 0.0, []
        for term in used:
            wi = w[TERMS.index(term)]
            fn = lambda term=term: losses[term](p, x, c, key)  # noqa: E731
            if term in always:
                value = fn()
                parts.append(value)
            else:  # skip the work while its weight is zero (both branches compiled once)
                value = jax.lax.cond(wi > 0, fn, lambda: jnp.zeros((), p_dtype(tr)))
                parts.append(jnp.where(wi > 0, value, jnp.nan))
            total = total + wi * value
        return total, jnp.stack(parts)

    def step(s, tr, opt_state, step_key, feed, start):
        x, c = step_rows(feed, s - start)
        if shard is not None:
            x, c = jax.lax.with_sharding_constraint((x, c), shard[0])
        w = weights_j[jnp.searchsorted(starts_j, s, side="right") - 1]
        (loss, parts), grads = jax.value_and_grad(total_loss, has_aux=True)(
            tr, x, c, jax.random.fold_in(step_key, s), w
        )
        updates, opt_state = optimizer.update(grads, opt_state, tr)
        out = (loss, parts, optax.tree.norm(grads), w)
        return optax.apply_updates(tr, updates), opt_state, out

    def chunk(tr, opt_state, step_key, feed, start, stop):
        traces[0] += 1
        dtype = p_dtype(tr)
        # Outputs of steps >= stop stay NaN (weights 0). A fori_loop with a traced trip count
        # runs exactly stop - start steps: no per-step branch, one compile for every length.
        outs = (
            jnp.full((length,), jnp.nan, dtype),
            jnp.full((length, len(used)), jnp.nan, dtype),
            jnp.full((length,), jnp.nan, dtype),
            jnp.zeros((length, len(TERMS)), weights_j.dtype),
        )

        def body(s, carry):
            tr, opt_state, outs = carry
            tr, opt_state, out = step(s, tr, opt_state, step_key, feed, start)
            outs = jax.tree.map(lambda buf, o: buf.at[s - start].set(o), outs, out)
            return tr, opt_state, outs

        return jax.lax.fori_loop(start, stop, body, (tr, opt_state, outs))

    jitted = jax.jit(chunk) if shard is None else jax.jit(chunk, out_shardings=shard[1])
    return jitted, used, traces


def step_rows(feed, i):
    """The data rows (x, ctx) of the chunk's i-th step from ``feed = (idx, x, ctx)``.

    With ``idx`` (length, batch) the rows are gathered on the device from the whole data set
    ``x`` (n, *event) (and per-row ``ctx`` (n, c)); with ``idx`` None, ``x`` and ``ctx`` are
    the chunk's rows already gathered on the host, (length, batch, ...). None stays None.
    """
    idx, x, c = feed
    take = (lambda a: a[idx[i]]) if idx is not None else (lambda a: a[i])
    return (None if x is None else take(x)), (None if c is None else take(c))


def p_dtype(tree):
    leaves = jax.tree.leaves(tree)
    return leaves[0].dtype if leaves else jnp.zeros(()).dtype
