"""One ``run(config)`` for every model kind: data or target -> model -> ``fl.fit`` -> run folder.

A model kind is a small record of functions (`Kind`: build, init, fit arguments, evaluate,
plots, sample); ``KINDS`` holds the flow and the VAE records, and `run`, `evaluate`, `sample`
and `load_run` are written once over it. The run folder is described in ``folder.py``; with
several devices (``train.devices``) the fit and the evaluation are data parallel.

  >>> result = run(load_config("configs/maf_two_moons.yaml"))
  >>> result.metrics["test_nll"], result.run_dir
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.experiment import config as cfg
from flowjax_lab.experiment import flows, vaes
from flowjax_lab.experiment.build import (
    Problem,
    build_problem,
    optimizer_for,
    standardizer_from_json,
    standardizer_json,
)
from flowjax_lab.experiment.folder import (
    RunResult,
    new_run_dir,
    read_checkpoints,
    run_config,
    run_keys,
    run_mesh,
    saved_params,
    write_metrics,
)
from flowjax_lab.training import fit


class Kind(NamedTuple):
    """What differs between model kinds; every function is the kind module's of that name."""

    build: Callable  # (config, problem) -> model
    init: Callable  # (model, problem, key) -> params
    fit_args: Callable  # (config, problem) -> the kind's fl.fit keywords
    initial_metrics: Callable  # (config, problem, model, params, key) -> dict, before fitting
    history_metrics: Callable  # (problem, history) -> dict, from the training history
    evaluate: Callable  # (config, problem, model, params, key, mesh, iwae_k, iwae_chunk) -> dict
    plot: Callable  # (config, problem, model, params, history, run_dir, key) -> [Path]
    sample: Callable  # (problem, model, params, key, n) -> (n, ...) array in data units


def _kind(module) -> Kind:
    return Kind(*(getattr(module, name) for name in Kind._fields))


KINDS = {"flow": _kind(flows), "vae": _kind(vaes)}


def kind_of(config: cfg.Config) -> Kind:
    return KINDS["vae" if config.model.name == "vae" else "flow"]


def fit_options(config: cfg.Config) -> dict:
    """The ``fl.fit`` keywords every kind shares, from ``config.objective`` and ``config.train``."""
    tc = config.train
    return {
        "objective": config.objective,
        "steps": tc.steps,
        "batch_size": tc.batch_size,
        "optimizer": optimizer_for(tc),
        "val_every": tc.val_every,
        "patience": tc.patience,
        "checkpoint_every": tc.checkpoint_every,
        "keep": tc.keep,
        "resume": tc.resume,
    }


def run(config: cfg.Config, *, progress: bool | None = None) -> RunResult:
    """Train the config's model and write its run folder."""
    kind, keys, main = kind_of(config), run_keys(config), jax.process_index() == 0
    problem = build_problem(config)
    model = kind.build(config, problem)
    params = kind.init(model, problem, keys.init)
    metrics = kind.initial_metrics(config, problem, model, params, keys.eval)
    mesh, run_dir = run_mesh(config.train.devices), new_run_dir(config)
    saved = {"experiment": cfg.to_dict(config), "standardizer": standardizer_json(problem)}
    result = fit(keys.fit, model, params, **fit_options(config), **kind.fit_args(config, problem),
                 checkpoint_dir=run_dir / "checkpoints", progress=progress and main,
                 config=saved, mesh=mesh)  # fmt: skip
    metrics.update(kind.evaluate(config, problem, model, result.params, keys.eval, mesh))
    metrics.update(steps=int(result.step), best_step=result.best_step)
    metrics.update(kind.history_metrics(problem, result.history))
    if not main:
        return RunResult(run_dir, result.params, result.history, metrics, [])
    write_metrics(run_dir, result.history, metrics, config.train.log_every)
    pictures = []
    if config.output.plots:
        args = (problem, model, result.params, result.history, run_dir, keys.eval)
        pictures = kind.plot(config, *args)
    return RunResult(run_dir, result.params, result.history, metrics, pictures)


def load_run(run_dir: str | Path) -> tuple[cfg.Config, Problem, Any, Any]:
    """(config, problem, model, params) of a run folder, params from its last checkpoint.

    The params are the best by validation loss when the run validated, else the last ones; the
    data standardisation is the one stored with them in the checkpoint.
    """
    config = run_config(run_dir)
    kind = kind_of(config)
    ckpt, meta, saved = read_checkpoints(run_dir, config)
    problem = build_problem(config, standardizer_from_json(saved.get("standardizer")))
    model = kind.build(config, problem)
    return config, problem, model, saved_params(ckpt, meta, model.init)


def evaluate(run_dir: str | Path, iwae_k: int | None = None, iwae_chunk: int | None = None) -> dict:
    """The final metrics of a saved run, recomputed from its config and checkpoint.

    ``iwae_k`` / ``iwae_chunk``: for a VAE run, the importance samples of its test log p(x)
    (default: the config's ``eval.iwae_k``) and how many are drawn at a time. The rows are split
    over the run's ``train.devices`` (null: all devices) as in training.
    """
    config, problem, model, params = load_run(run_dir)
    mesh = run_mesh(config.train.devices)
    key = run_keys(config).eval
    return kind_of(config).evaluate(config, problem, model, params, key, mesh, iwae_k, iwae_chunk)


def sample(
    run_dir: str | Path, n: int, seed: int = 0, temperature: float | None = None
) -> np.ndarray:
    """n samples from a saved run's model, in data units (pixels in [0, 1) for images), at
    ``temperature`` (None: the config's ``eval.temperature``)."""
    positive_int(n, "n")
    config, problem, model, params = load_run(run_dir)
    t = config.eval.temperature if temperature is None else temperature
    t = cfg.check_temperature(t, config, "temperature")
    return kind_of(config).sample(problem, model, params, jax.random.key(seed), n, t)
