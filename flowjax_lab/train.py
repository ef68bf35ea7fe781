"""``fit``: one optax loop for maximum likelihood, reverse KL, their mixes and schedules.

The update step is traced and compiled once per ``fit`` call; up to ``steps_per_chunk`` steps
run inside one compiled loop, so Python dispatch is paid once per chunk, and the next chunk is
dispatched before the host reads the last one (NaN check, history, validation, checkpoint and
progress overlap device work). Every random
choice is a function of (key, step): step s draws its base samples from fold_in(key, s), and
epoch e shuffles the data by a permutation seeded by (key, e), so a resumed run matches an
uninterrupted one. Objective weights live in an array indexed by step inside the compiled step:
a schedule switches objectives without recompiling.

The pieces, one job each: ``_check_inputs`` here (every argument check, before any work);
``_train_step`` (the device side: ``term_losses``, ``validation_loss`` and ``make_chunk``, the
compiled steps); ``_fit_loop`` (the host side: ``feeder`` for each chunk's rows, ``launcher``
to dispatch a chunk and its validation, ``RunLog`` for history and best params, checkpoint
save/restore, and ``host_loop``, which reads one chunk while the next one runs).
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
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm.auto import tqdm

from flowjax_lab._fit_loop import (
    RunLog,
    TrainingDivergedError,
    compile_validation,
    feeder,
    host_loop,
    launcher,
    open_checkpoints,
    restore,
    save_checkpoint,
)
from flowjax_lab._train_step import (
    TERMS,
    VAE_TERMS,
    check_rows,
    check_target,
    make_chunk,
    objective_samples,
    p_dtype,
    parse_objective,
    term_losses,
)
from flowjax_lab.core import Flow, as_key, combine, partition
from flowjax_lab.sharding import (
    as_mesh,
    batch_sharding,
    check_divisible,
    replicate,
    replicated,
    to_host,
    to_local,
)
from flowjax_lab.vae.model import VAE
from flowjax_lab.vae.training import check_vae_inputs, vae_term_losses, validation_bound

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


def default_optimizer(
    steps: int, learning_rate: float = 1e-3, warmup_steps: int | None = None, clip_norm=1.0
) -> optax.GradientTransformation:
    """Adam with a linear warm-up from 0 then a cosine decay to lr / 10; global-norm clipping."""
    warmup = max(1, min(100, steps // 10)) if warmup_steps is None else max(1, warmup_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup, max(steps, warmup + 1), end_value=0.1 * learning_rate
    )
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(schedule))


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
) -> FitResult:
    """Fit ``flow`` by forward KL (MLE on ``data``), reverse KL (to ``target_log_prob``), or a mix;
    or a ``fl.vae.VAE`` by its ELBO or IWAE-k bound on ``data``.

    Args:
      key: a jax random key, the only source of randomness.
      objective: "mle", "reverse_kl", "reverse_kl_stl" (stick the landing), a dict of weights
        {"mle": 1.0, "reverse_kl": 0.5}, or a schedule [(0, "mle"), (500, "reverse_kl")].
        For a VAE: "elbo" (minus the ELBO), {"iwae": k} (minus IWAE-k, plain gradient) or
        {"iwae_dreg": k} (DReG gradient); the dict value is k, not a weight. A schedule works
        too, e.g. [(0, "elbo"), (1000, {"iwae": 5})].
      data: (n, *event) training rows (needed by "mle"), reshuffled every epoch.
      target_log_prob: unnormalised log density of ONE event (needed by reverse KL), or an
        object with a ``log_prob`` attribute (an ``fl.targets`` Target).
      batch_size: data rows per step, and base samples per step for reverse KL.
      optimizer: any optax transformation (default ``default_optimizer(steps)``). Only float
        leaves are optimised; integer leaves (permutation indices) are never changed.
      val_data: (n, *event) rows, or (rows, context): mean NLL every ``val_every`` steps and at
        the end; the params with the best one are returned. ``patience``: stop after that many
        validations without improvement. For a VAE the validation loss is minus the mean bound
        (IWAE-k with the objective's largest k, else the ELBO) at a fixed key derived from
        ``key``; rows must be binary for a Bernoulli likelihood (a fixed binarisation).
      context: one vector (c,) for every event, or per-row context (n, c) aligned with ``data``.
      checkpoint_dir: save every ``checkpoint_every`` steps, at the end and on divergence, keeping
        the last ``keep``; ``resume=True`` continues from the latest (with its saved key).
      progress: tqdm bar with step, loss and validation loss; None shows it only on a terminal.
      steps_per_chunk: steps per compiled loop call (capped by val/checkpoint periods).
      config: a JSON-able dict stored with every checkpoint.
      mesh: None (one device), a ``jax.sharding.Mesh`` with a "data" axis, or a device count
        (``fl.sharding.make_mesh(n)``): data parallelism. Each step's ``batch_size`` rows are
        split over the data axis, params and optimizer state replicated, the gradient reduced
        by XLA; the result matches a one-device run to float tolerance. ``batch_size`` must
        divide evenly over the data devices. Multi-host: every process calls
        ``fl.distributed.initialize`` first and passes the same arguments (the same host
        ``data``); each sends only its own devices' rows, process 0 writes the checkpoints.
      binarize: VAE with a Bernoulli likelihood only: "dynamic" treats ``data`` as intensities
        in [0, 1] and draws x ~ Bernoulli(row) at each step from fold_in(key, step) (resumable);
        None (default) trains on the rows as given, which must then be binary.
      dequantize: flows only: None (default: rows as given), or the number of pixel levels L
        when ``data`` holds integer pixel values in [0, L): each step trains on x = (p + u) / L
        with fresh u ~ U[0, 1) drawn from fold_in(key, step) (uniform dequantisation, resumable;
        a fixed draw would let the flow fit the noise). ``val_data`` must already be
        dequantised (one fixed draw, e.g. ``fl.dequantization.uniform_dequantize``).
      preprocess: with ``dequantize`` only: a fixed jax function taking each step's dequantised
        batch (n, *event) to the model's units, same shape (e.g. the MAF paper's logit, then a
        standardisation). Its Jacobian does not depend on the params and is not counted: the
        loss is the NLL in model units, the units ``val_data`` must be given in.

    Raises:
      ValueError: unknown objective, missing data or target, bad data (NaN/inf rows, shape), a
        target that is NaN for every initial sample, an unusable checkpoint directory, a batch
        that does not split evenly over the mesh.
      TrainingDivergedError: a non-finite loss or gradient norm, naming the step and carrying
        the last good params (also written as the last checkpoint when checkpointing).
    """
    t0 = time.perf_counter()
    key = as_key(key)
    inputs = _check_inputs(
        flow,
        params,
        key,
        objective=objective,
        data=data,
        target_log_prob=target_log_prob,
        context=context,
        val_data=val_data,
        steps=steps,
        batch_size=batch_size,
        val_every=val_every,
        patience=patience,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        keep=keep,
        resume=resume,
        steps_per_chunk=steps_per_chunk,
        mesh=mesh,
        binarize=binarize,
        dequantize=dequantize,
        preprocess=preprocess,
    )
    mesh = inputs.mesh
    place = (lambda tree: tree) if mesh is None else lambda tree: replicate(tree, mesh)  # noqa: E731
    trainable, fixed = partition(params)
    trainable = place(trainable)
    # closed over by the compiled steps: host constants on a mesh (a closure may not hold
    # arrays that span other processes' devices)
    consts = fixed if mesh is None else to_host(fixed)
    optimizer = default_optimizer(steps) if optimizer is None else optimizer
    losses = term_losses(
        flow, inputs.target_log_prob, inputs.batch, inputs.ctx_one, dequantize, preprocess
    )
    if isinstance(flow, VAE):
        losses.update(vae_term_losses(flow, inputs.samples, binarize))
    chunk, used, traces = make_chunk(
        consts,
        optimizer,
        losses,
        inputs.starts,
        inputs.weights,
        length=inputs.length,
        shard=None if mesh is None else (batch_sharding(mesh), replicated(mesh)),
    )
    opt_state = place(optimizer.init(trainable))
    log, step = RunLog(used, params), 0
    ckpt = open_checkpoints(checkpoint_dir, keep, resume)
    if resume and ckpt.latest_step() is not None:
        key, step, trainable, opt_state = restore(ckpt, log, key, params, opt_state)
        trainable, opt_state = place((trainable, opt_state))
    if jax.process_count() > 1:  # no process writes before all have read the checkpoints
        multihost_utils.sync_global_devices("flowjax_lab.fit: checkpoints read")
    val_loss = None  # the flow's mean NLL
    if isinstance(flow, VAE):  # a fixed key: every validation sees the same draws
        val_loss = validation_bound(flow, inputs.samples, jax.random.fold_in(key, 0x5A11D))
    val_fn = compile_validation(flow, consts, trainable, inputs.val, mesh, val_loss)
    step_key, data_key = jax.random.split(key)
    launch = launcher(
        chunk,
        feeder(inputs, data_key),
        val_fn,
        place(step_key),
        length=inputs.length,
        steps=steps,
        val_every=val_every if val_fn is not None else None,
        checkpoint_every=checkpoint_every if ckpt is not None else None,
    )

    def save(at, tr, opt) -> bool:
        return save_checkpoint(ckpt, at, log, combine(tr, fixed), opt, key, config)

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=steps, initial=step, disable=not show, desc="fit", dynamic_ncols=True)
    try:
        trainable, opt_state, step = host_loop(
            launch,
            log,
            save,
            bar,
            (trainable, opt_state, step),
            steps=steps,
            checkpoint_every=checkpoint_every,
            patience=patience,
            fixed=fixed,
            t0=t0,
        )
    finally:
        bar.close()
    if jax.process_count() > 1:  # process 0's last checkpoint is on disk for every process
        multihost_utils.sync_global_devices("flowjax_lab.fit: done")
    last = to_local(combine(trainable, fixed))
    return FitResult(
        params=to_local(log.best_params) if val_fn is not None else last,
        opt_state=to_local(opt_state),
        history=log.history(),
        step=step,
        best_step=log.best_step,
        best_val_loss=log.best_loss,
        stopped_early=log.stopped,
        traces=traces[0],
        last_params=last,
    )


# --------------------------------------------------------------------------- inputs


class _Inputs(NamedTuple):
    """``fit``'s arguments checked: the objective, host arrays and the chunk sizes."""

    starts: np.ndarray
    weights: np.ndarray
    target_log_prob: Callable | None
    data: np.ndarray | None
    ctx_rows: np.ndarray | None
    ctx_one: jax.Array | None
    val: tuple | None  # (x, context) host arrays
    batch: int
    length: int
    mesh: Mesh | None
    samples: dict  # {term: k} of the IWAE terms


def _positive(**values):
    for name, v in values.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_pixel_rows(data: np.ndarray, levels: int) -> None:
    """``fit(dequantize=L)``'s data must be integer pixel values in [0, L)."""
    lo, hi = float(data.min()), float(data.max())
    integers = bool(np.all(data == np.floor(data)))
    if not (0 <= lo and hi < levels and integers):
        raise ValueError(
            f"dequantize={levels} needs data of integer pixel values in [0, {levels}); got "
            f"values in [{lo}, {hi}]" + ("" if integers else ", not all integers (dequantised?)")
        )


def _check_inputs(flow, params, key, *, objective, data, target_log_prob, context, val_data,
                  steps, batch_size, val_every, patience, checkpoint_dir, checkpoint_every,
                  keep, resume, steps_per_chunk, mesh, binarize, dequantize,
                  preprocess) -> _Inputs:  # fmt: skip
    """Every check on ``fit``'s arguments, raised before any compile (see ``fit``'s Raises)."""
    starts, weights = parse_objective(objective)
    samples = objective_samples(objective)
    used = [t for i, t in enumerate(TERMS) if weights[:, i].any()]
    is_vae, vae_used = isinstance(flow, VAE), [t for t in used if t in VAE_TERMS]
    if is_vae != (len(vae_used) == len(used)):
        raise ValueError(
            f"objective {objective!r}: a VAE trains with {list(VAE_TERMS)} only, a flow with "
            f"{[t for t in TERMS if t not in VAE_TERMS]}; got a {type(flow).__name__} and {used}"
        )
    if binarize is not None and not is_vae:
        raise ValueError(f"binarize={binarize!r} is for a VAE with a Bernoulli likelihood")
    if dequantize is not None:
        if is_vae or "mle" not in used:
            raise ValueError(f"dequantize={dequantize!r} is for a flow trained by 'mle' on pixels")
        _positive(dequantize=dequantize)
    if preprocess is not None and (dequantize is None or not callable(preprocess)):
        raise ValueError(
            f"preprocess={preprocess!r}: a function applied to each step's dequantised batch; "
            "it needs dequantize=L (data given in model units need no preprocess)"
        )
    for term in ("mle", *VAE_TERMS):
        if term in used and data is None:
            raise ValueError(f"objective {objective!r} uses {term!r}, which needs data=")
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

    dtype = p_dtype(partition(params)[0])
    shape = flow.data_shape if is_vae else flow.event_shape
    if is_vae:
        val_x = val_data[0] if isinstance(val_data, (tuple, list)) else val_data
        check_vae_inputs(flow, data, val_x, binarize, context)
    ctx_rows = ctx_one = val = None
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
        if dequantize is not None:
            _check_pixel_rows(data, dequantize)
    if val_data is not None:
        val_x, val_ctx = val_data if isinstance(val_data, (tuple, list)) else (val_data, None)
        val_x = check_rows(val_x, shape, "val_data", dtype)
        val = (val_x, ctx_one if val_ctx is None else np.asarray(val_ctx, dtype))
    if needs_target:
        check_target(flow, params, target_log_prob, key, ctx_one)
    batch = batch_size if data is None else min(batch_size, data.shape[0])
    length = min(
        steps_per_chunk,
        steps,
        val_every if val_data is not None else steps,
        checkpoint_every if checkpoint_dir is not None else steps,
    )
    mesh = as_mesh(mesh)
    if mesh is not None:
        check_divisible(batch, mesh, "batch_size" if batch == batch_size else "batch (data rows)")
    inputs = (
        starts,
        weights,
        target_log_prob,
        data,
        ctx_rows,
        ctx_one,
        val,
        batch,
        length,
        mesh,
        samples,
    )
    return _Inputs(*inputs)
