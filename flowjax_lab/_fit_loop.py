"""The host side of ``fit``: dispatching chunks, feeding their data, the run's log,
checkpoints and the loop that reads one chunk while the next one runs.

On a mesh (``fit(..., mesh=)``) only the placement changes: params, optimizer state and key
are replicated, each chunk's rows are gathered on the host and sent as a global array split
over the data axis (each process sends its own devices' rows), results are read from a local
replica, and process 0 alone writes checkpoints (read by all).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab import sharding
from flowjax_lab._train_step import TERMS, EpochShuffler, validation_loss
from flowjax_lab.checkpoint import Checkpointer
from flowjax_lab.core import combine, partition


class TrainingDivergedError(FloatingPointError):
    """A non-finite loss or gradient: ``.step`` names it, ``.params`` are the last good params."""

    def __init__(self, message, step, params, opt_state, history):
        super().__init__(message)
        self.step, self.params, self.opt_state, self.history = step, params, opt_state, history


# --------------------------------------------------------------------------- the device side


class Chunk(NamedTuple):
    """A dispatched chunk: steps start .. stop - 1 from (tr, opt) to (new_tr, new_opt)."""

    start: int
    stop: int
    tr: Any
    opt: Any
    new_tr: Any
    new_opt: Any
    outs: Any
    val: Any


def compile_validation(flow, fixed, trainable, val, mesh=None, loss=None) -> Callable | None:
    """``val_fn(tr) -> loss`` on the validation rows, compiled now (not mid-loop); or None.

    ``loss(params, x, ctx)`` defaults to ``validation_loss(flow)`` (the mean NLL). On a mesh the rows are split over the data axis when their count divides evenly (else
    replicated) and the loss is replicated.
    """
    if val is None:
        return None
    loss = validation_loss(flow) if loss is None else loss
    fn = lambda tr, x, c: loss(combine(tr, fixed), x, c)  # noqa: E731
    if mesh is None:
        x, c = jnp.asarray(val[0]), None if val[1] is None else jnp.asarray(val[1])
        compiled = jax.jit(fn)
    else:
        n = len(val[0])
        split = n % sharding.data_size(mesh) == 0
        rows = lambda a: sharding.global_rows(lambda s: a[s], mesh, n)  # noqa: E731
        x = rows(val[0]) if split else sharding.replicate(val[0], mesh)
        per_row = val[1] is not None and np.ndim(val[1]) == 2
        c = rows(val[1]) if split and per_row else sharding.replicate(val[1], mesh)
        compiled = jax.jit(fn, out_shardings=sharding.replicated(mesh))
    compiled = compiled.lower(trainable, x, c).compile()
    return lambda tr: compiled(tr, x, c)


def feeder(inputs, data_key) -> Callable:
    """``feed(start) -> (idx, x, ctx)``: the data rows of the chunk starting at ``start``.

    One device: the data set goes to the device once and each chunk sends only its
    (length, batch) row indices, drawn by ``EpochShuffler`` (see ``_train_step.step_rows``).
    On a mesh: each chunk's rows (length, batch, *event) are gathered on the host, split over
    the data axis along the batch dimension, and each process sends only its devices' part.
    """
    if inputs.data is None:
        return lambda start: (None, None, None)
    shuffler = EpochShuffler(data_key, inputs.data.shape[0], inputs.batch)
    data, ctx, mesh = inputs.data, inputs.ctx_rows, inputs.mesh
    if mesh is None:
        data, ctx = jnp.asarray(data), None if ctx is None else jnp.asarray(ctx)
        return lambda start: (jnp.asarray(shuffler.indices(start, inputs.length)), data, ctx)

    def feed(start):
        idx = shuffler.indices(start, inputs.length)
        rows = lambda a: sharding.global_rows(lambda s: a[idx[:, s]], mesh, inputs.batch, 1)  # noqa: E731
        return None, rows(data), None if ctx is None else rows(ctx)

    return feed


def launcher(chunk, feed, val_fn, step_key, *, length, steps, val_every, checkpoint_every):
    """``launch(start, tr, opt, stop=None) -> Chunk``: dispatch one chunk without waiting.

    A chunk stops at the next validation or checkpoint step (``val_every`` /
    ``checkpoint_every`` None: no such stops) and validation runs on its end params.
    """

    def next_stop(start):
        stop = min(start + length, steps)
        for every in (val_every, checkpoint_every):
            if every is not None:
                stop = min(stop, (start // every + 1) * every)
        return stop

    def launch(start, tr, opt, stop=None):
        stop = next_stop(start) if stop is None else stop
        new_tr, new_opt, outs = chunk(
            tr, opt, step_key, feed(start), np.int32(start), np.int32(stop)
        )
        validate = val_fn is not None and (stop % val_every == 0 or stop == steps)
        val = val_fn(new_tr) if validate else None
        return Chunk(start, stop, tr, opt, new_tr, new_opt, outs, val)

    return launch


# --------------------------------------------------------------------------- the host side


class RunLog:
    """The host-side record of a run: the history, and the best validation so far."""

    def __init__(self, used, params):
        self.used = used
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
        self.hist = {k: [] for k in names}
        self.best_params, self.best_loss, self.best_step = params, None, None
        self.since, self.stopped = 0, False

    def add_steps(self, start, ran, loss, parts, gnorm, w, elapsed) -> int:
        """Record a chunk's steps up to its first non-finite one; returns how many were kept."""
        bad = np.flatnonzero(~(np.isfinite(loss[:ran]) & np.isfinite(gnorm[:ran])))
        ok = ran if bad.size == 0 else int(bad[0])
        h = self.hist
        h["step"].append(np.arange(start, start + ok))
        h["loss"].append(loss[:ok])
        h["grad_norm"].append(gnorm[:ok])
        h["time"].append(np.full(ok, elapsed))
        for j, t in enumerate(self.used):
            h[f"loss_{t}"].append(parts[:ok, j])
            h[f"weight_{t}"].append(w[:ok, TERMS.index(t)])
        return ok

    def add_val(self, step, value, params, patience) -> None:
        """Record a validation; keep ``params`` if best, count towards ``patience`` if not."""
        self.hist["val_step"].append(np.asarray([step]))
        self.hist["val_loss"].append(np.asarray([value]))
        if self.best_loss is None or value < self.best_loss:
            self.best_params, self.best_loss, self.best_step, self.since = params, value, step, 0
        else:
            self.since += 1
            self.stopped = patience is not None and self.since >= patience

    def meta(self) -> dict:
        return {
            "history": self.history(),
            "best_val_loss": self.best_loss,
            "best_step": self.best_step,
            "since_best": self.since,
            "stopped_early": self.stopped,
        }

    def load(self, meta, best_params) -> None:
        self.best_params, self.best_loss = best_params, meta["best_val_loss"]
        self.best_step, self.since = meta["best_step"], meta["since_best"]
        self.stopped = meta["stopped_early"]
        for k, v in meta["history"].items():
            if k in self.hist:
                self.hist[k] = [np.asarray([np.nan if e is None else e for e in v])]

    def history(self) -> dict:
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self.hist.items()}
        out["step"], out["val_step"] = out["step"].astype(int), out["val_step"].astype(int)
        return out


def open_checkpoints(checkpoint_dir, keep, resume) -> Checkpointer | None:
    """The run's Checkpointer (None without a directory); refuses to overwrite old runs."""
    if checkpoint_dir is None:
        return None
    ckpt = Checkpointer(checkpoint_dir, keep)
    if ckpt.latest_step() is not None and not resume:
        raise ValueError(
            f"checkpoint_dir {ckpt.directory} already holds checkpoints {ckpt.all_steps()}: "
            "pass resume=True to continue, or use a new directory (nothing was overwritten)"
        )
    return ckpt


def checkpoint_trees(params, opt_state, best_params, key) -> dict:
    """The pytrees a checkpoint holds."""
    key = jax.random.key_data(key)
    return {"params": params, "opt_state": opt_state, "best_params": best_params, "key": key}


def restore(ckpt, log, key, params, opt_state):
    """(key, step, trainable, opt_state) from the latest checkpoint; fills ``log``."""
    trees, meta, _ = ckpt.restore(checkpoint_trees(params, opt_state, params, key))
    log.load(meta, trees["best_params"])
    trainable = partition(trees["params"])[0]
    return jax.random.wrap_key_data(trees["key"]), int(meta["step"]), trainable, trees["opt_state"]


def save_checkpoint(ckpt, at, log, params, opt_state, key, config) -> bool:
    """Write the checkpoint at step ``at`` (once, by process 0); whether checkpointing is on."""
    if ckpt is not None and jax.process_index() == 0 and at not in ckpt.all_steps():
        trees = sharding.to_host(checkpoint_trees(params, opt_state, log.best_params, key))
        ckpt.save(at, trees, log.meta(), config)
    return ckpt is not None


def host_loop(launch, log, save, bar, state, *, steps, checkpoint_every, patience, fixed, t0):
    """Run chunks from ``state = (tr, opt_state, step)`` to ``steps``; returns the end state.

    Pipelining: the next chunk is dispatched before this one's results are read, so the host
    work (NaN scan, history, validation read-out, checkpoint write, progress) overlaps device
    compute. A chunk that turns out not to be needed (early stop) is dropped.
    """
    tr, opt_state, step = state
    cur = launch(step, tr, opt_state) if step < steps and not log.stopped else None
    while cur is not None:
        nxt = launch(cur.stop, cur.new_tr, cur.new_opt) if cur.stop < steps else None
        loss, parts, gnorm, w = sharding.to_host(cur.outs)
        ran = cur.stop - cur.start
        ok = log.add_steps(cur.start, ran, loss, parts, gnorm, w, time.perf_counter() - t0)
        if ok < ran:
            diverged(cur, ok, loss[ok], gnorm[ok], launch, save, log, fixed)
        tr, opt_state, step = cur.new_tr, cur.new_opt, cur.stop
        postfix = {"loss": f"{float(loss[ran - 1]):.4f}"}
        if cur.val is not None:
            v = float(sharding.to_host(cur.val))
            log.add_val(step, v, combine(tr, fixed), patience)
            postfix["val"] = f"{v:.4f}"
        if step % checkpoint_every == 0 or step == steps or log.stopped:
            save(step, tr, opt_state)
        bar.set_postfix(postfix, refresh=False)
        bar.update(ran)
        cur = None if log.stopped else nxt
    return tr, opt_state, step


def diverged(cur, ok, loss, gnorm, launch, save, log, fixed):
    """Redo ``cur`` up to its first bad step, checkpoint that state, raise the error."""
    at = cur.start + ok
    tr, opt_state = cur.tr, cur.opt
    if ok:
        redo = launch(cur.start, cur.tr, cur.opt, stop=at)
        tr, opt_state = redo.new_tr, redo.new_opt
    where = f" and in the checkpoint at step {at}" if save(at, tr, opt_state) else ""
    raise TrainingDivergedError(
        f"training diverged at step {at}: loss = {loss}, gradient norm = {gnorm}; the last "
        f"good params (before step {at}) are on this error's .params{where}",
        at,
        sharding.to_local(combine(tr, fixed)),
        sharding.to_local(opt_state),
        log.history(),
    )
