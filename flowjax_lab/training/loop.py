"""The host side of ``fit``: dispatching chunks, the run's log, checkpoints, and the loop that
reads one chunk while the next one runs.

On a mesh (``fit(..., mesh=)``) only the placement changes: params, optimizer state and key
are replicated, each chunk's rows are sent as a global array split over the data axis, results
are read from a local replica, and process 0 alone writes checkpoints (read by all).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab import sharding
from flowjax_lab.checkpoint import Checkpointer
from flowjax_lab.core import combine, partition
from flowjax_lab.training.objective import TERMS
from flowjax_lab.training.step import StepInfo, TrainState


class TrainingDivergedError(FloatingPointError):
    """A non-finite loss or gradient: ``.step`` names it, ``.params`` are the last good params."""

    def __init__(self, message, step, params, opt_state, history):
        super().__init__(message)
        self.step, self.params, self.opt_state, self.history = step, params, opt_state, history


class Chunk(NamedTuple):
    """A dispatched chunk: steps start .. stop - 1 from ``state`` to ``new_state``."""

    start: int
    stop: int
    state: TrainState
    new_state: TrainState
    infos: StepInfo
    val: Any


def compile_validation(loss, fixed, trainable, val, mesh=None) -> Callable | None:
    """``val_fn(trainable) -> loss`` on the validation rows, compiled now (not mid-loop).

    ``loss(params, x, ctx)``; None without validation rows. On a mesh the rows are split over
    the data axis when their count divides evenly (else replicated), the loss replicated.
    """
    if val is None:
        return None
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


def launcher(chunk, feed, val_fn, step_key, *, length, steps, val_every, checkpoint_every):
    """``launch(start, state, stop=None) -> Chunk``: dispatch one chunk without waiting.

    A chunk stops at the next validation or checkpoint step (``val_every`` /
    ``checkpoint_every`` None: no such stops) and validation runs on its end params.
    """

    def next_stop(start):
        stop = min(start + length, steps)
        for every in (val_every, checkpoint_every):
            if every is not None:
                stop = min(stop, (start // every + 1) * every)
        return stop

    def launch(start, state: TrainState, stop=None) -> Chunk:
        stop = next_stop(start) if stop is None else stop
        new_state, infos = chunk(state, step_key, feed(start), np.int32(stop))
        validate = val_fn is not None and (stop % val_every == 0 or stop == steps)
        val = val_fn(new_state.params) if validate else None
        return Chunk(start, stop, state, new_state, infos, val)

    return launch


class RunLog:
    """The host-side record of a run: the history, and the best validation so far."""

    def __init__(self, used, params, nfe: bool = False):
        self.used, self.nfe = used, nfe
        names = (
            "step",
            "loss",
            "grad_norm",
            "time",
            *(f"loss_{t}" for t in used),
            *(f"weight_{t}" for t in used),
            *(("nfe",) if nfe else ()),
            "val_step",
            "val_loss",
        )
        self.hist = {k: [] for k in names}
        self.best_params, self.best_loss, self.best_step = params, None, None
        self.since, self.stopped = 0, False

    def add_steps(self, start: int, ran: int, info: StepInfo, elapsed: float) -> int:
        """Record a chunk's steps up to its first non-finite one; returns how many were kept."""
        finite = np.isfinite(info.loss[:ran]) & np.isfinite(info.grad_norm[:ran])
        bad = np.flatnonzero(~finite)
        ok = ran if bad.size == 0 else int(bad[0])
        h = self.hist
        h["step"].append(np.arange(start, start + ok))
        h["loss"].append(info.loss[:ok])
        h["grad_norm"].append(info.grad_norm[:ok])
        h["time"].append(np.full(ok, elapsed))
        for j, t in enumerate(self.used):
            h[f"loss_{t}"].append(info.terms[:ok, j])
            h[f"weight_{t}"].append(info.weights[:ok, TERMS.index(t)])
        if self.nfe:
            h["nfe"].append(info.nfe[:ok])
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


# --------------------------------------------------------------------------- checkpoints


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
    """(key, TrainState) from the latest checkpoint; fills ``log``."""
    trees, meta, _ = ckpt.restore(checkpoint_trees(params, opt_state, params, key))
    log.load(meta, trees["best_params"])
    state = TrainState(partition(trees["params"])[0], trees["opt_state"], jnp.asarray(meta["step"], jnp.int32))
    return jax.random.wrap_key_data(trees["key"]), state


def save_checkpoint(ckpt, at, log, params, opt_state, key, config) -> bool:
    """Write the checkpoint at step ``at`` (once, by process 0); whether checkpointing is on."""
    if ckpt is not None and jax.process_index() == 0 and at not in ckpt.all_steps():
        trees = sharding.to_host(checkpoint_trees(params, opt_state, log.best_params, key))
        ckpt.save(at, trees, log.meta(), config)
    return ckpt is not None


# --------------------------------------------------------------------------- the loop


def host_loop(launch, log, save, bar, state: TrainState, *, start, steps, checkpoint_every,
              patience, fixed, t0) -> TrainState:  # fmt: skip
    """Run chunks from ``state`` (at step ``start``) to ``steps``; returns the end state.

    Pipelining: the next chunk is dispatched before this one's results are read, so the host
    work (NaN scan, history, validation read-out, checkpoint write, progress) overlaps device
    compute. A chunk that turns out not to be needed (early stop) is dropped.
    """
    cur = launch(start, state) if start < steps and not log.stopped else None
    while cur is not None:
        nxt = launch(cur.stop, cur.new_state) if cur.stop < steps else None
        info = StepInfo(*sharding.to_host(tuple(cur.infos)))
        ran = cur.stop - cur.start
        ok = log.add_steps(cur.start, ran, info, time.perf_counter() - t0)
        if ok < ran:
            diverged(cur, ok, info, launch, save, log, fixed)
        state, step = cur.new_state, cur.stop
        postfix = {"loss": f"{float(info.loss[ran - 1]):.4f}"}
        if cur.val is not None:
            v = float(sharding.to_host(cur.val))
            log.add_val(step, v, combine(state.params, fixed), patience)
            postfix["val"] = f"{v:.4f}"
        if step % checkpoint_every == 0 or step == steps or log.stopped:
            save(step, state)
        bar.set_postfix(postfix, refresh=False)
        bar.update(ran)
        cur = None if log.stopped else nxt
    return state


def diverged(cur: Chunk, ok: int, info: StepInfo, launch, save, log, fixed):
    """Redo ``cur`` up to its first bad step, checkpoint that state, raise the error."""
    at = cur.start + ok
    state = cur.state if not ok else launch(cur.start, cur.state, stop=at).new_state
    where = f" and in the checkpoint at step {at}" if save(at, state) else ""
    raise TrainingDivergedError(
        f"training diverged at step {at}: loss = {info.loss[ok]}, gradient norm = "
        f"{info.grad_norm[ok]}; the last good params (before step {at}) are on this error's "
        f".params{where}",
        at,
        sharding.to_local(combine(state.params, fixed)),
        sharding.to_local(state.opt_state),
        log.history(),
    )
