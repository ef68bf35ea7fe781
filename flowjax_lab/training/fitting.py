"""``fit``: one optax loop for maximum likelihood, reverse KL, their mixes and schedules, and the
VAE bounds.

The pieces, one job each: ``objective`` (the spec, parsed once), ``checks`` (every argument
check, before any work), ``losses`` (the terms, the batch maps, validation losses), ``step``
(the pure `train_step` and the compiled chunk of steps), ``feed`` (each step's rows), ``loop``
(dispatch, history, checkpoints, the host loop). ``fit`` below only wires them.

Up to ``steps_per_chunk`` steps run inside one compiled loop, so Python dispatch is paid once per
chunk, and the next chunk is dispatched before the host reads the last one. Every random choice
is a function of (key, step): step s draws from fold_in(step key, s), epoch e shuffles the data
by a permutation seeded by (key, e), so a resumed run matches an uninterrupted one. Objective
weights live in an array indexed by step inside the compiled step: a schedule switches
objectives without recompiling.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from flowjax_lab.core import as_key, combine, partition
from flowjax_lab.flow import Flow
from flowjax_lab.sharding import batch_sharding, replicate, replicated, to_host, to_local
from flowjax_lab.training import checks, losses
from flowjax_lab.training.feed import feeder
from flowjax_lab.training.loop import (
    RunLog,
    compile_validation,
    host_loop,
    launcher,
    open_checkpoints,
    restore,
    save_checkpoint,
)
from flowjax_lab.training.objective import parse_objective
from flowjax_lab.training.step import (
    StepSetup,
    TrainState,
    counts_evaluations,
    make_chunk,
    make_step,
)


class FitResult(NamedTuple):
    """What ``fit`` returns.

    Attributes:
      params: the best params by validation loss when ``val_data`` is given, else the last.
      opt_state: optimizer state after the last step (it belongs to ``last_params``).
      history: numpy arrays, one entry per step: step, loss, loss_<term> (NaN while the term's
        weight is 0), weight_<term>, grad_norm, time (seconds into the call when the step's chunk
        ended); and val_step, val_loss at validation steps. For a continuous flow
        (``fl.models.cnf``) trained with "mle", also nfe: the vector-field evaluations per row
        of that step's density solves (`transforms.CNFSolution.num_evaluations`).
      step: steps done. best_step / best_val_loss: where validation was best (None without it).
      stopped_early: whether ``patience`` ran out. traces: times the chunk step was compiled.
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


SCHEDULES = ("constant", "cosine", "warmup_cosine")


def default_optimizer(
    steps: int,
    learning_rate: float = 1e-3,
    warmup_steps: int | None = None,
    clip_norm: float | None = 1.0,
    schedule: str = "warmup_cosine",
) -> optax.GradientTransformation:
    """Adam after global-norm clipping at ``clip_norm`` (None: no clipping), on a schedule.

    "warmup_cosine" (default): a linear warm-up from 0 over ``warmup_steps`` (None:
    max(1, min(100, steps // 10))) then a cosine decay to lr / 10 at ``steps``. "cosine": the
    same without warm-up. "constant": ``learning_rate`` throughout (after the warm-up, if
    ``warmup_steps`` is given). The experiment config's ``train.lr / schedule / warmup_steps /
    clip`` are these arguments.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if schedule == "warmup_cosine":
        warmup = max(1, min(100, steps // 10)) if warmup_steps is None else max(1, warmup_steps)
    else:
        warmup = warmup_steps or 0
    if schedule == "constant":
        lr = optax.join_schedules(
            [optax.linear_schedule(0.0, learning_rate, warmup), optax.constant_schedule(learning_rate)],
            [warmup],
        ) if warmup else learning_rate  # fmt: skip
    elif warmup:
        lr = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=0.1 * learning_rate
        )
    else:
        lr = optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.1)
    adam = optax.adam(lr)
    return adam if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adam)


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
    mesh=None,
    binarize: str | None = None,
    dequantize: int | None = None,
    preprocess: Callable | None = None,
    batch_maps: Sequence[Callable] = (),
) -> FitResult:
    """Fit ``flow`` by forward KL (MLE on ``data``), reverse KL (to ``target_log_prob``), or a mix;
    or a ``fl.vae.VAE`` by its ELBO or IWAE-k bound on ``data``.

    Args:
      key: a jax random key, the only source of randomness.
      objective: "mle", "reverse_kl", "reverse_kl_stl" (stick the landing), a dict of weights
        {"mle": 1.0, "reverse_kl": 0.5}, a schedule [(0, "mle"), (500, "reverse_kl")], or an
        ``fl.training.Objective`` (see ``fl.training.parse_objective``). For a VAE: "elbo"
        (minus the ELBO), {"iwae": k} (minus IWAE-k, plain gradient) or {"iwae_dreg": k} (DReG
        gradient); the dict value is k, not a weight. A schedule works too.
      data: (n, *event) training rows (needed by "mle" and the VAE terms), reshuffled every
        epoch. Integer pixel arrays (e.g. uint8) are accepted with ``dequantize``.
      target_log_prob: unnormalised log density of ONE event (needed by reverse KL), or an
        object with a ``log_prob`` attribute (an ``fl.targets`` Target).
      batch_size: data rows per step, and base samples per step for reverse KL (split over
        the data devices on a mesh: each device draws its share).
      optimizer: any optax transformation (default ``default_optimizer(steps)``). Only float
        leaves are optimised; integer leaves (permutation indices) are never changed.
      val_data: (n, *event) rows, or (rows, context): the validation loss every ``val_every``
        steps and at the end; the params with the best one are returned. ``patience``: stop
        after that many validations without improvement. Flows: mean NLL. VAE: minus the mean
        bound (IWAE-k with the objective's largest k, else the ELBO) at a fixed key derived
        from ``key``; rows must be binary for a Bernoulli likelihood.
      context: one vector (c,) for every event, or per-row context (n, c) aligned with ``data``.
      checkpoint_dir: save every ``checkpoint_every`` steps, at the end and on divergence, keeping
        the last ``keep``; ``resume=True`` continues from the latest (with its saved key).
      progress: tqdm bar with step, loss and validation loss; None shows it only on a terminal.
      steps_per_chunk: steps per compiled loop call (capped by val/checkpoint periods).
      config: a JSON-able dict stored with every checkpoint.
      mesh: None (one device), a ``jax.sharding.Mesh`` with a "data" axis, or a device count:
        data parallelism. Each step's rows (and reverse-KL base samples) are split over the
        data axis, params and optimizer state replicated, the gradient reduced by XLA; the
        result matches a one-device run to float tolerance. ``batch_size`` must divide evenly
        over the data devices. Multi-host: every process calls ``fl.distributed.initialize``
        first and passes the same arguments; process 0 writes the checkpoints.
      binarize: with ``dequantize``, ``preprocess`` and ``batch_maps``, maps of each step's data
        rows, run in this order as one chain of ``(key, x) -> x`` functions (``fl.training.losses``), each on
        its own key from fold_in(key, step), so resumable. ``binarize="dynamic"`` (a VAE with a
        Bernoulli likelihood): x ~ Bernoulli(rows), the rows intensities in [0, 1].
      dequantize: ``L`` (flows trained by "mle"): rows of integer pixels in [0, L) become
        (p + u) / L with fresh u ~ U[0, 1) (``val_data`` must already be dequantised, in model
        units).
      preprocess: (with ``dequantize``) a fixed function of the dequantised batch
        to model units (e.g. the MAF paper's logit); its Jacobian is not counted.
      batch_maps: further ``(key, x) -> x`` maps of your own, run last.

    Raises:
      ValueError: unknown objective, missing data or target, bad data (NaN/inf rows, shape), a
        target that is NaN for every initial sample, an unusable checkpoint directory, a batch
        that does not split evenly over the mesh.
      TrainingDivergedError: a non-finite loss or gradient norm, naming the step and carrying
        the last good params (also written as the last checkpoint when checkpointing).
    """
    t0, key, spec = time.perf_counter(), as_key(key), parse_objective(objective)
    checks.check_loop_args(steps=steps, batch_size=batch_size, steps_per_chunk=steps_per_chunk,
                           val_every=val_every, checkpoint_every=checkpoint_every, keep=keep,
                           patience=patience, val_data=val_data, resume=resume,
                           checkpoint_dir=checkpoint_dir)  # fmt: skip
    checks.check_batch_maps(flow, spec, binarize=binarize, dequantize=dequantize,
                            preprocess=preprocess)  # fmt: skip
    fd = checks.check_data_inputs(flow, params, key, spec, data=data, context=context,
                                  target_log_prob=target_log_prob, val_data=val_data,
                                  batch_size=batch_size, mesh=mesh, binarize=binarize,
                                  dequantize=dequantize)  # fmt: skip
    periods = (val_every if val_data is not None else steps, checkpoint_every if checkpoint_dir else steps)  # fmt: skip
    length = min(steps_per_chunk, steps, *periods)
    place = (lambda t: t) if fd.mesh is None else (lambda t: replicate(t, fd.mesh))
    trainable, fixed = partition(params)
    consts = fixed if fd.mesh is None else to_host(fixed)  # a closure holds no global arrays
    optimizer = default_optimizer(steps) if optimizer is None else optimizer
    shard = None if fd.mesh is None else batch_sharding(fd.mesh)
    terms = losses.term_losses(flow, spec, fd.target_log_prob, fd.batch, fd.ctx_one, shard)
    maps = losses.batch_maps(binarize=binarize, dequantize=dequantize, preprocess=preprocess,
                             extra=batch_maps)  # fmt: skip
    setup = StepSetup(terms, optimizer, spec, consts, losses.chain_batch_maps(*maps), shard)
    out = None if fd.mesh is None else replicated(fd.mesh)
    chunk = make_chunk(make_step(setup), length, len(spec.used), out)
    log = RunLog(spec.used, params, nfe=counts_evaluations(terms))
    ckpt = open_checkpoints(checkpoint_dir, keep, resume)
    state = TrainState(trainable, optimizer.init(trainable), jnp.zeros((), jnp.int32))
    if resume and ckpt.latest_step() is not None:
        key, state = restore(ckpt, log, key, params, state.opt_state)
    start, state = int(state.step), place(state)
    _sync("flowjax_lab.fit: checkpoints read")  # no process writes before all have read
    val_loss = losses.validation_loss(flow, spec, key)
    val_fn = compile_validation(val_loss, consts, state.params, fd.val, fd.mesh)
    step_key, data_key = jax.random.split(key)
    launch = launcher(chunk, feeder(fd, data_key, length), val_fn, place(step_key),
                      length=length, steps=steps, val_every=val_every if val_fn else None,
                      checkpoint_every=checkpoint_every if ckpt else None)  # fmt: skip

    def save(at, st: TrainState) -> bool:
        return save_checkpoint(ckpt, at, log, combine(st.params, fixed), st.opt_state, key, config)

    show = sys.stderr.isatty() if progress is None else bool(progress)
    with tqdm(total=steps, initial=start, disable=not show, desc="fit", dynamic_ncols=True) as bar:
        state = host_loop(launch, log, save, bar, state, start=start, steps=steps, t0=t0,
                          checkpoint_every=checkpoint_every, patience=patience, fixed=fixed)  # fmt: skip
    _sync("flowjax_lab.fit: done")  # process 0's last checkpoint is on disk for every process
    return _result(state, log, fixed, val_fn is not None, chunk)


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _result(state: TrainState, log: RunLog, fixed, validated: bool, chunk) -> FitResult:
    last = to_local(combine(state.params, fixed))
    return FitResult(
        params=to_local(log.best_params) if validated else last,
        opt_state=to_local(state.opt_state),
        history=log.history(),
        step=int(to_host(state.step)),
        best_step=log.best_step,
        best_val_loss=log.best_loss,
        stopped_early=log.stopped,
        traces=chunk._cache_size(),
        last_params=last,
    )
