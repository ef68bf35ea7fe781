"""The run folder and a run's keys: one skeleton for every model kind.

``<output.root>/<name>-<timestamp or seed>/`` holds ``config.yaml`` (the resolved config),
``metrics.jsonl`` (one JSON object per logged step, then a final summary), ``checkpoints/`` and
PNG plots. In a multi-process run every process trains and process 0 writes the folder.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from flowjax_lab.checkpoint import Checkpointer
from flowjax_lab.experiment import config as cfg
from flowjax_lab.sharding import make_mesh

INIT, FIT, EVAL = range(3)


class RunKeys(NamedTuple):
    """The run's keys, all from ``config.seed``: init params, fit, evaluation."""

    init: jax.Array
    fit: jax.Array
    eval: jax.Array


class RunResult(NamedTuple):
    """What ``run`` returns: the folder, the fitted params, the history, the final metrics."""

    run_dir: Path
    params: Any
    history: dict
    metrics: dict
    plots: list[Path]


def run_keys(config: cfg.Config) -> RunKeys:
    """(init, fit, eval) keys: split(fold_in(key(seed), 1), 3); the data use fold_in(.., 0)."""
    return RunKeys(*jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1), 3))


def run_mesh(devices: int | None):
    """The fit's mesh: ``train.devices`` devices (null: all of them), None for one device."""
    n = jax.device_count() if devices is None else devices
    return None if n == 1 else make_mesh(n)


def _fixed_dir(config: cfg.Config) -> Path:
    run_dir = Path(config.output.root) / f"{config.name}-seed{config.seed}"
    if run_dir.exists() and not config.train.resume:
        raise ValueError(
            f"run folder {run_dir} exists: set train.resume=true to continue it, or change "
            "name, seed or output.root (nothing was overwritten)"
        )
    return run_dir


def new_run_dir(config: cfg.Config) -> Path:
    """The run's folder, created (and ``config.yaml`` written by process 0)."""
    root = Path(config.output.root)
    if jax.process_count() > 1 and config.output.run_id != "seed":
        raise ValueError("a multi-process run needs output.run_id: seed (one folder for all processes)")
    if config.output.run_id == "seed":
        run_dir = _fixed_dir(config)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("flowjax_lab.run: folder checked")
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir, i = root / f"{config.name}-{stamp}", 1
        while run_dir.exists():
            run_dir, i = root / f"{config.name}-{stamp}-{i}", i + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        (run_dir / "config.yaml").write_text(cfg.dump(config))
    return run_dir


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def metric_rows(history: dict, log_every: int) -> list[dict]:
    """One JSON object per logged training step (every ``log_every``, and the last) and per
    validation; a validation at a logged step is merged into that step's row."""
    steps = np.asarray(history.get("step", []))
    series = [k for k in history if k not in ("step", "val_step", "val_loss")]
    rows: dict[int, dict] = {}
    for i, s in enumerate(steps):
        if s % log_every == 0 or i == len(steps) - 1:
            rows[int(s)] = {"step": int(s), **{k: _num(history[k][i]) for k in series}}
    for s, v in zip(history.get("val_step", []), history.get("val_loss", [])):
        rows.setdefault(int(s), {"step": int(s)})["val_loss"] = _num(v)
    return [rows[s] for s in sorted(rows)]


def write_metrics(run_dir: Path, history: dict, metrics: dict, log_every: int) -> None:
    """``metrics.jsonl``: the logged steps, then ``{"summary": true, **metrics}``."""
    with open(run_dir / "metrics.jsonl", "w") as f:
        for row in metric_rows(history, log_every):
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"summary": True, **metrics}) + "\n")


def run_config(run_dir: str | Path) -> cfg.Config:
    """The config of a run folder, or a ValueError when it is not one."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints").is_dir():
        raise ValueError(f"{run_dir} is not a run folder (needs config.yaml and checkpoints/)")
    return cfg.load_config(run_dir / "config.yaml")


def read_checkpoints(run_dir: str | Path, config: cfg.Config) -> tuple[Checkpointer, dict, dict]:
    """(checkpointer, meta, saved config dict) of a run folder's last checkpoint."""
    ckpt = Checkpointer(Path(run_dir) / "checkpoints", keep=max(config.train.keep, 1))
    _, meta, saved = ckpt.read_meta()
    return ckpt, meta, saved


def saved_params(ckpt: Checkpointer, meta: dict, init) -> Any:
    """The best params by validation when the run validated, else the last; ``init(key)``
    gives their structure (only that tree is read)."""
    name = "best_params" if meta.get("best_step") is not None else "params"
    like = jax.eval_shape(init, jax.random.key(0))  # shapes only, no compile
    like = {name: jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), like)}
    trees, _, _ = ckpt.restore(like)
    return trees[name]
