"""``fit``: one optax loop for maximum likelihood, reverse KL, their mixes and schedules.

The update step is traced and compiled once per ``fit`` call; up to ``steps_per_chunk`` steps
run inside one compiled loop, so Python dispatch is paid once per chunk, and the next chunk is
dispatched before the host reads the last one (NaN check, history, validation, checkpoint and
progress overlap device work). Every random
choice is a function of (key, step): step s draws its base samples from fold_in(key, s), and
epoch e shuffles the data by a permutation seeded by (key, e), so a resumed run matches an
uninterrupted one. Objective weights live in an array indexed by step inside the compiled step:
a schedule switches objectives without recompiling.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from flowjax_lab._train_step import (
    TERMS,
    EpochShuffler,
    check_rows,
    check_target,
    make_chunk,
    p_dtype,
    parse_objective,
)
from flowjax_lab.checkpoint import Checkpointer
from flowjax_lab.core import Flow, as_key, combine, partition
from flowjax_lab.objectives import forward_kl

__all__ = ["TERMS", "FitResult", "TrainingDivergedError", "default_optimizer", "fit"]


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      params: the best params by validation loss when ``val_data`` is given, else the last.
      opt_state: optimizer state after the last step (it belongs to ``last_params``).
      history: numpy arrays, one entry per step: step, loss, loss_<term> (NaN while the term's
        weight is 0), weight_<term>, grad_norm, time (seconds into the call when the step's chunk
        ended); and val_step, val_loss at validation steps.
      step: steps done. best_step / best_val_loss: where validation was best (None without it).
      stopped_early: whether ``patience`` ran out. traces: times the chunk step was traced.
      last_params: params after the last step.
    """

    params: Any
    opt_state: Any
    history: dict
    step: int
    best_step: int | None
    best_val_loss: float | None
    stopped_early: bool
    traces: int
    last_params: Any


class _Chunk(NamedTuple):
    """A dispatched chunk: steps start .. stop - 1 from (tr, opt) to (new_tr, new_opt)."""

    start: int
    stop: int
    tr: Any
    opt: Any
    new_tr: Any
    new_opt: Any
    outs: Any
    val: Any


class TrainingDivergedError(FloatingPointError):
    """A non-finite loss or gradient: ``.step`` names it, ``.params`` are the last good params."""

    def __init__(self, message, step, params, opt_state, history):
        super().__init__(message)
        self.step, self.params, self.opt_state, self.history = step, params, opt_state, history


def default_optimizer(
    steps: int, learning_rate: float = 1e-3, warmup_steps: int | None = None, clip_norm=1.0
) -> optax.GradientTransformation:
    """Adam with a linear warm-up from 0 then a cosine decay to lr / 10; global-norm clipping."""
    warmup = max(1, min(100, steps // 10)) if warmup_steps is None else max(1, warmup_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=0.1 * learning_rate
    )
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(schedule))


def _positive(**values):
    for name, v in values.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def fit(
    key,
    flow: Flow,
    params,
    *,
    objective="mle",
    data=None,
    target_log_prob: Callable | None = None,
    steps: int = 1000,
    batch_size: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    val_data=None,
    val_every: int = 100,
    patience: int | None = None,
    context=None,
    checkpoint_dir=None,
    checkpoint_every: int = 500,
    keep: int = 3,
    resume: bool = False,
    progress: bool | None = None,
    steps_per_chunk: int = 100,
    config: dict | None = None,
) -> FitResult:
    """Fit ``flow`` by forward KL (MLE on ``data``), reverse KL (to ``target_log_prob``), or a mix.

    Args:
      key: a jax random key, the only source of randomness.
      objective: "mle", "reverse_kl", "reverse_kl_stl" (stick the landing), a dict of weights
        {"mle": 1.0, "reverse_kl": 0.5}, or a schedule [(0, "mle"), (500, "reverse_kl")].
      data: (n, *event) training rows (needed by "mle"), reshuffled every epoch.
      target_log_prob: unnormalised log density of ONE event (needed by reverse KL), or an
        object with a ``log_prob`` attribute (an ``fl.targets`` Target).
      batch_size: data rows per step, and base samples per step for reverse KL.
      optimizer: any optax transformation (default ``default_optimizer(steps)``). Only float
        leaves are optimised; integer leaves (permutation indices) are never changed.
      val_data: (n, *event) rows, or (rows, context): mean NLL every ``val_every`` steps and at
        the end; the params with the best one are returned. ``patience``: stop after that many
        validations without improvement.
      context: one vector (c,) for every event, or per-row context (n, c) aligned with ``data``.
      checkpoint_dir: save every ``checkpoint_every`` steps, at the end and on divergence, keeping
        the last ``keep``; ``resume=True`` continues from the latest (with its saved key).
      progress: tqdm bar with step, loss and validation loss; None shows it only on a terminal.
      steps_per_chunk: steps per compiled loop call (capped by val/checkpoint periods).
      config: a JSON-able dict stored with every checkpoint.

    Raises:
      ValueError: unknown objective, missing data or target, bad data (NaN/inf rows, shape), a
        target that is NaN for every initial sample, an unusable checkpoint directory.
      TrainingDivergedError: a non-finite loss or gradient norm, naming the step and carrying
        the last good params (also written as the last checkpoint when checkpointing).
    """
    t0 = time.perf_counter()
    starts, weights = parse_objective(objective)
    used = [t for i, t in enumerate(TERMS) if weights[:, i].any()]
    if "mle" in used and data is None:
        raise ValueError(f"objective {objective!r} uses 'mle', which needs data=")
    if target_log_prob is not None and not callable(target_log_prob):
        target_log_prob = getattr(target_log_prob, "log_prob", target_log_prob)
    needs_target = any(t.startswith("reverse_kl") for t in used)
    if needs_target and not callable(target_log_prob):
        raise ValueError(f"objective {objective!r} uses reverse KL, which needs target_log_prob=")
    _positive(
        steps=steps,
        batch_size=batch_size,
        steps_per_chunk=steps_per_chunk,
        val_every=val_every,
        checkpoint_every=checkpoint_every,
        keep=keep,
    )
    if patience is not None and val_data is None:
        raise ValueError("patience= (early stopping) needs val_data=")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")

    key = as_key(key)
    trainable, fixed = partition(params)
    dtype, shape = p_dtype(trainable), flow.event_shape
    ctx_rows = ctx_one = None
    if context is not None:
        context = np.asarray(context)
        if context.ndim == 1:
            ctx_one = jnp.asarray(context, dtype)
        elif data is None or context.ndim != 2 or context.shape[0] != np.shape(data)[0]:
            raise ValueError(f"context: expected (c,) or one row per data row, got {context.shape}")
        elif needs_target:
            raise ValueError("reverse KL needs one context vector (c,), not per-row context")
        else:
            ctx_rows = check_rows(context, context.shape[1:], "context", dtype)
    if data is not None:
        data = check_rows(data, shape, "data", dtype)
    if val_data is not None:
        val_x, val_ctx = val_data if isinstance(val_data, (tuple, list)) else (val_data, None)
        val_x = check_rows(val_x, shape, "val_data", dtype)
        val_ctx = ctx_one if val_ctx is None else jnp.asarray(val_ctx, dtype)
    if needs_target:
        check_target(flow, params, target_log_prob, key, ctx_one)

    batch = batch_size if data is None else min(batch_size, data.shape[0])
    length = min(
        steps_per_chunk,
        steps,
        val_every if val_data is not None else steps,
        checkpoint_every if checkpoint_dir is not None else steps,
    )
    optimizer = default_optimizer(steps) if optimizer is None else optimizer
    chunk, used, traces = make_chunk(
        flow,
        fixed,
        optimizer,
        target_log_prob,
        starts,
        weights,
        batch=batch,
        context=ctx_one,
        length=length,
    )
    if val_data is not None:  # compiled now, not in the middle of the loop
        val_fn = jax.jit(lambda tr, x, c: forward_kl(flow)(combine(tr, fixed), x, c))
        val_fn = val_fn.lower(trainable, val_x, val_ctx).compile()

    opt_state = optimizer.init(trainable)
    names = (
        "step",
        "loss",
        "grad_norm",
        "time",
        *(f"loss_{t}" for t in used),
        *(f"weight_{t}" for t in used),
        "val_step",
        "val_loss",
    )
    hist = {k: [] for k in names}
    best = {"params": params, "val_loss": None, "step": None, "since": 0, "stopped": False}
    step, ckpt = 0, None
    if checkpoint_dir is not None:
        ckpt = Checkpointer(checkpoint_dir, keep)
        if ckpt.latest_step() is not None and not resume:
            raise ValueError(
                f"checkpoint_dir {ckpt.directory} already holds checkpoints {ckpt.all_steps()}: "
                "pass resume=True to continue, or use a new directory (nothing was overwritten)"
            )
        if resume and ckpt.latest_step() is not None:
            like = {
                "params": params,
                "opt_state": opt_state,
                "best_params": params,
                "key": jax.random.key_data(key),
            }
            trees, meta, _ = ckpt.restore(like)
            trainable, opt_state = partition(trees["params"])[0], trees["opt_state"]
            key, step = jax.random.wrap_key_data(trees["key"]), int(meta["step"])
            best.update(
                params=trees["best_params"],
                val_loss=meta["best_val_loss"],
                step=meta["best_step"],
                since=meta["since_best"],
                stopped=meta["stopped_early"],
            )
            for k, v in meta["history"].items():
                if k in hist:
                    hist[k] = [np.asarray([np.nan if e is None else e for e in v])]
    step_key, data_key = jax.random.split(key)
    shuffler = None if data is None else EpochShuffler(data_key, data.shape[0], batch)

    def save(at):
        if ckpt is None or at in ckpt.all_steps():
            return
        meta = {
            "history": _history(hist),
            "best_val_loss": best["val_loss"],
            "best_step": best["step"],
            "since_best": best["since"],
            "stopped_early": best["stopped"],
        }
        trees = {
            "params": combine(trainable, fixed),
            "opt_state": opt_state,
            "best_params": best["params"],
            "key": jax.random.key_data(key),
        }
        ckpt.save(at, trees, meta, config)

    def next_stop(start):
        stop = min(start + length, steps)
        if val_data is not None:
            stop = min(stop, (start // val_every + 1) * val_every)
        if ckpt is not None:
            stop = min(stop, (start // checkpoint_every + 1) * checkpoint_every)
        return stop

    def launch(start, tr, opt, stop=None):
        """Dispatch one chunk (and its validation) without waiting for it."""
        stop = next_stop(start) if stop is None else stop
        idx = None if shuffler is None else jnp.asarray(shuffler.indices(start, length))
        new_tr, new_opt, outs = chunk(
            tr, opt, step_key, idx, data, ctx_rows, jnp.int32(start), jnp.int32(stop)
        )
        validate = val_data is not None and (stop % val_every == 0 or stop == steps)
        val = val_fn(new_tr, val_x, val_ctx) if validate else None
        return _Chunk(start, stop, tr, opt, new_tr, new_opt, outs, val)

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=steps, initial=step, disable=not show, desc="fit", dynamic_ncols=True)
    try:
        cur = launch(step, trainable, opt_state) if step < steps and not best["stopped"] else None
        while cur is not None:
            # Pipelining: the next chunk is dispatched before this one's results are read, so the
            # host work below (NaN scan, history, validation read-out, checkpoint write, progress)
            # overlaps device compute. A chunk that turns out not to be needed is dropped.
            nxt = launch(cur.stop, cur.new_tr, cur.new_opt) if cur.stop < steps else None
            loss, parts, gnorm, w = jax.device_get(cur.outs)
            ran = cur.stop - cur.start
            bad = np.flatnonzero(~(np.isfinite(loss[:ran]) & np.isfinite(gnorm[:ran])))
            ok = ran if bad.size == 0 else int(bad[0])
            hist["step"].append(np.arange(cur.start, cur.start + ok))
            hist["loss"].append(loss[:ok])
            hist["grad_norm"].append(gnorm[:ok])
            hist["time"].append(np.full(ok, time.perf_counter() - t0))
            for j, t in enumerate(used):
                hist[f"loss_{t}"].append(parts[:ok, j])
                hist[f"weight_{t}"].append(w[:ok, TERMS.index(t)])
            if bad.size:  # redo the chunk up to the bad step: the state after the last good one
                at = cur.start + ok
                trainable, opt_state = cur.tr, cur.opt
                if ok:
                    redo = launch(cur.start, cur.tr, cur.opt, stop=at)
                    trainable, opt_state = redo.new_tr, redo.new_opt
                save(at)
                where = f" and in the checkpoint at step {at}" if ckpt is not None else ""
                raise TrainingDivergedError(
                    f"training diverged at step {at}: loss = {loss[ok]}, gradient norm = "
                    f"{gnorm[ok]}; the last good params (before step {at}) are on this error's "
                    f".params{where}",
                    at,
                    combine(trainable, fixed),
                    opt_state,
                    _history(hist),
                )
            trainable, opt_state, step = cur.new_tr, cur.new_opt, cur.stop
            postfix = {"loss": f"{float(loss[ran - 1]):.4f}"}
            if cur.val is not None:
                v = float(cur.val)
                hist["val_step"].append(np.asarray([step]))
                hist["val_loss"].append(np.asarray([v]))
                if best["val_loss"] is None or v < best["val_loss"]:
                    best.update(params=combine(trainable, fixed), val_loss=v, step=step, since=0)
                else:
                    best["since"] += 1
                    best["stopped"] = patience is not None and best["since"] >= patience
                postfix["val"] = f"{v:.4f}"
            if step % checkpoint_every == 0 or step == steps or best["stopped"]:
                save(step)
            bar.set_postfix(postfix, refresh=False)
            bar.update(ran)
            cur = None if best["stopped"] else nxt
    finally:
        bar.close()
    last = combine(trainable, fixed)
    return FitResult(
        params=best["params"] if val_data is not None else last,
        opt_state=opt_state,
        history=_history(hist),
        step=step,
        best_step=best["step"],
        best_val_loss=best["val_loss"],
        stopped_early=best["stopped"],
        traces=traces[0],
        last_params=last,
    )


def _history(hist) -> dict:
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in hist.items()}
    out["step"], out["val_step"] = out["step"].astype(int), out["val_step"].astype(int)
    return out
