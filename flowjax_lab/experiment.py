"""Run an experiment from a config: data or target -> model -> ``fl.fit`` -> a run folder.

The pieces a config builds (flow, data/target problem, optimizer) live in ``problems.py``.

``run(config)`` writes ``<output.root>/<name>-<timestamp or seed>/`` holding ``config.yaml`` (the
resolved config), ``metrics.jsonl`` (one JSON object per logged step, then a final summary),
``standardizer.json`` (the data standardisation, stored with the model), ``checkpoints/`` and
PNG plots. With several devices (``train.devices``) the fit and the test NLL are data
parallel; in a multi-process run (``fl.distributed.initialize``) every process runs ``run`` and
process 0 writes the folder. ``evaluate(run_dir)`` and ``sample(run_dir, n)`` rebuild the model from the saved
config and restore the params from the checkpoint. Callable from Python and notebooks:

  >>> result = run(load_config("configs/maf_two_moons.yaml"))
  >>> result.metrics["test_nll"], result.run_dir
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from flowjax_lab import config as cfg
from flowjax_lab import data as D
from flowjax_lab import plots
from flowjax_lab.core import Flow, data_init
from flowjax_lab.objectives import importance_diagnostics
from flowjax_lab.problems import (
    Problem,
    batched,
    build_flow,
    build_optimizer,
    build_problem,
    fit_objective,
    in_data_units,
    mean_se,
    pixels_to_model_units,
    true_log_z,
)
from flowjax_lab.sharding import make_mesh, sharded_log_prob

# --------------------------------------------------------------------------- the run folder


class RunResult(NamedTuple):
    """What ``run`` returns: the folder, the fitted params, the history, the final metrics."""

    run_dir: Path
    params: Any
    history: dict
    metrics: dict
    plots: list[Path]


def _mesh(devices: int | None):
    """The fit's mesh: ``train.devices`` devices (null: all of them), None for one device."""
    n = jax.device_count() if devices is None else devices
    return None if n == 1 else make_mesh(n)


def _new_run_dir(config: cfg.Config) -> Path:
    root = Path(config.output.root)
    if jax.process_count() > 1:
        if config.output.run_id != "seed":
            raise ValueError(
                "a multi-process run needs output.run_id: seed (one folder for all processes)"
            )
        run_dir = root / f"{config.name}-seed{config.seed}"
        if run_dir.exists() and not config.train.resume:
            raise ValueError(f"run folder {run_dir} exists: set train.resume=true to continue it")
        multihost_utils.sync_global_devices("flowjax_lab.run: folder checked")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    if config.output.run_id == "seed":
        run_dir = root / f"{config.name}-seed{config.seed}"
        if run_dir.exists() and not config.train.resume:
            raise ValueError(
                f"run folder {run_dir} exists: set train.resume=true to continue it, or change "
                "name, seed or output.root (nothing was overwritten)"
            )
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir, i = root / f"{config.name}-{stamp}", 1
        while run_dir.exists():
            run_dir, i = root / f"{config.name}-{stamp}-{i}", i + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _metric_rows(history: dict, log_every: int) -> list[dict]:
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


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def run(config: cfg.Config, *, progress: bool | None = None) -> RunResult:
    """Train the config's model and write its run folder (see the module docstring)."""
    if config.model.name == "vae":  # a VAE is not a flow: its own module
        return _vae().run(config, progress=progress)
    problem = build_problem(config)
    flow = build_flow(config, problem.event_shape or problem.dim)
    k_init, k_fit, k_eval = jax.random.split(
        jax.random.fold_in(jax.random.key(config.seed), 1), 3
    )  # see _eval_key
    if problem.train is not None:  # jitted: one compile instead of one per eager op
        first = problem.train[: 4096 if problem.event_shape is None else 256]
        params = jax.jit(lambda k, x: data_init(flow, k, x))(k_init, first)
    else:
        params = jax.jit(flow.init)(k_init)
    tc, main = config.train, jax.process_index() == 0
    mesh = _mesh(tc.devices)
    run_dir = _new_run_dir(config)
    if main:
        (run_dir / "config.yaml").write_text(cfg.dump(config))
    saved = {"experiment": cfg.to_dict(config), "standardizer": _standardizer_json(problem)}
    result = _fit(
        k_fit,
        flow,
        params,
        objective=fit_objective(config.objective),
        data=problem.train if problem.train_pixels is None else problem.train_pixels,
        dequantize=None if problem.train_pixels is None else problem.num_levels,
        preprocess=pixels_to_model_units(problem),
        target_log_prob=problem.target_log_prob,
        steps=tc.steps,
        batch_size=tc.batch_size,
        optimizer=build_optimizer(tc),
        val_data=problem.val[: tc.val_rows]
        if problem.val is not None and len(problem.val)
        else None,
        val_every=tc.val_every,
        patience=tc.patience,
        checkpoint_dir=run_dir / "checkpoints",
        checkpoint_every=tc.checkpoint_every,
        keep=tc.keep,
        resume=tc.resume,
        progress=progress and main,
        config=saved,
        mesh=mesh,
    )
    metrics = _evaluate(config, problem, flow, result.params, k_eval, mesh)
    metrics.update(steps=int(result.step), best_step=result.best_step)
    metrics.update(_bits_per_dim_summary(problem, result.history))
    if not main:
        return RunResult(run_dir, result.params, result.history, metrics, [])
    with open(run_dir / "metrics.jsonl", "w") as f:
        for row in _metric_rows(result.history, tc.log_every):
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"summary": True, **metrics}) + "\n")
    pictures = _plots(config, problem, flow, result.params, result.history, run_dir, k_eval)
    return RunResult(run_dir, result.params, result.history, metrics, pictures)


def _vae():
    from flowjax_lab import vae_experiment  # noqa: PLC0415

    return vae_experiment


def _fit(*args, **kwargs):
    from flowjax_lab.training import fit  # noqa: PLC0415

    return fit(*args, **kwargs)


def _standardizer_json(problem: Problem) -> dict | None:
    s = problem.standardizer
    return (
        None
        if s is None
        else {"mean": np.asarray(s.mean).tolist(), "std": np.asarray(s.std).tolist()}
    )


def _evaluate(config, problem: Problem, flow: Flow, params, key, mesh=None) -> dict:
    """Final metrics: test NLL in data units (and bits/dim for digits); ELBO, log Z, ESS.

    On a mesh the log densities are computed with the rows split over its devices."""
    out: dict[str, Any] = {}
    if problem.test is not None and len(problem.test):
        log_prob = jax.jit(flow.log_prob)
        shift = (
            0.0
            if problem.standardizer is None
            else float(D.standardize_logdet(problem.standardizer))
        )
        chunk = 8192 if problem.event_shape is None else 128  # image flows: activation memory
        for split in ("val", "test"):
            x = getattr(problem, split)
            if x is None or not len(x):
                continue
            lp = (
                batched(log_prob, params, x, chunk)
                if mesh is None
                else sharded_log_prob(flow, params, np.asarray(x, np.float32), mesh)
            )
            nll = -(lp + shift)  # per example, data units
            out[f"{split}_nll"], out[f"{split}_nll_se"] = mean_se(nll)
            if split == "test" and problem.data_log_prob is not None:
                true = -np.asarray(problem.data_log_prob(_to_data_units(problem, x)))
                out["test_true_nll"] = mean_se(true)[0]
                out["test_kl_gap"] = mean_se(nll - true)[0]
            if split == "test" and (problem.alpha is not None or problem.num_levels):
                bpd = D.bits_per_dim(
                    nll - _logit_logdet(problem, x),
                    problem.dim,
                    num_levels=problem.num_levels or D.DIGITS_NUM_LEVELS,
                )
                out["test_bits_per_dim"], out["test_bits_per_dim_se"] = mean_se(bpd)
            if split == "test" and problem.alpha is not None:
                out["test_log_lik"], out["test_log_lik_se"] = mean_se(-nll)
    if problem.target is not None:
        n = config.eval.num_samples
        diag = jax.jit(  # one compile, not one per eager op of the sampler
            lambda p, k: importance_diagnostics(flow, problem.target_log_prob, p, k, n)
        )(params, key)
        out.update({k: float(v) for k, v in diag._asdict().items()})
        out["true_log_z"] = true_log_z(config, problem.target)
        if out["true_log_z"] is not None:
            out["log_z_minus_elbo"] = out["true_log_z"] - out["elbo"]
    return out


def _logit_logdet(problem: Problem, x: np.ndarray) -> np.ndarray:
    """Per-row log|det dy/dx| of the logit preprocessing (0 without one), x in model units."""
    if problem.alpha is None:
        return np.zeros(len(x))
    y = _to_data_units(problem, x)
    return np.asarray(D.logit_logdet(y, problem.alpha), np.float64)


def _bits_per_dim_offset(problem: Problem, x: np.ndarray) -> float:
    """c with bits/dim = (mean NLL in model units + c) / (dim log 2) on rows like ``x``.

    Exact for the mean over ``x``; for a training batch it uses the mean logit log-det of the
    split (zero for images), so the training curve carries that batch-to-batch approximation.
    """
    shift = 0.0 if problem.standardizer is None else D.standardize_logdet(problem.standardizer)
    levels = problem.num_levels or D.DIGITS_NUM_LEVELS
    sub = x[:: max(1, len(x) // 10000)]
    return float(-shift - np.mean(_logit_logdet(problem, sub)) + problem.dim * math.log(levels))


def _bits_per_dim_summary(problem: Problem, history: dict) -> dict:
    """Final train / validation bits per dim from the history, for pixel data (else empty)."""
    if problem.alpha is None and not problem.num_levels:
        return {}
    curves = _bits_per_dim_curves(problem, history)
    out = {"train_bits_per_dim_last": float(np.nanmean(curves["train"][-50:]))}
    if len(curves["val"]):
        out["val_bits_per_dim_best"] = float(np.nanmin(curves["val"]))
    return out


def _bits_per_dim_curves(problem: Problem, history: dict) -> dict:
    scale = problem.dim * math.log(2.0)
    train = (np.asarray(history["loss"]) + _bits_per_dim_offset(problem, problem.train)) / scale
    val = np.asarray(history.get("val_loss", []), np.float64)
    if len(val):
        val = (val + _bits_per_dim_offset(problem, problem.val)) / scale
    return {"step": history["step"], "train": train, "val_step": history["val_step"], "val": val}


def _to_data_units(problem: Problem, x: np.ndarray) -> np.ndarray:
    s = problem.standardizer
    return np.asarray(x if s is None else D.unstandardize(s, x))


def _samples(problem: Problem, flow: Flow, params, key, n: int) -> np.ndarray:
    """n model samples in data units (pixel intensities in [0, 1) for digits and images)."""
    x = _to_data_units(problem, np.asarray(jax.jit(flow.sample, static_argnums=2)(params, key, n)))
    if problem.alpha is not None:
        x = np.asarray(D.inverse_logit_transform(x, problem.alpha))
    return x


def _image_shape(problem: Problem) -> tuple[int, int] | None:
    """(H, W) of the pixel data's images, for the samples grid (None: not images)."""
    if problem.event_shape is not None:
        return tuple(problem.event_shape[:2])
    side = math.isqrt(problem.dim) if problem.alpha is not None else 0
    return (side, side) if side * side == problem.dim and side > 0 else None


def _plots(config, problem: Problem, flow: Flow, params, history, run_dir, key) -> list[Path]:
    if not config.output.plots:
        return []
    images = _image_shape(problem)
    n = min(config.eval.num_samples, 20000 if images is None else 64)
    samples = _samples(problem, flow, params, key, n)
    if images is not None:  # one channel of each image, as (n, H * W) rows
        samples = samples.reshape(n, *images, -1)[..., 0].reshape(n, -1)
    log_density = data = target_lp = None
    if problem.dim == 2:
        lp = in_data_units(flow, problem)
        log_density = lambda pts: batched(lp, params, pts)  # noqa: E731
        if problem.train is not None:
            data = _to_data_units(problem, problem.train[:20000])
        if problem.target is not None:
            target_lp = lambda pts: np.asarray(jax.vmap(problem.target.log_prob)(pts))  # noqa: E731
    pictures = plots.plot_run(
        run_dir,
        history,
        samples,
        log_density=log_density,
        data=data,
        target_log_density=target_lp,
        extent=config.eval.plot_range,
        grid_size=config.eval.grid_size,
        images=images is not None,
        image_shape=images or (8, 8),
        title=f"{config.name}: {config.model.name}",
    )
    if problem.alpha is not None or problem.num_levels:
        curves = _bits_per_dim_curves(problem, history)
        path = run_dir / "bits_per_dim.png"
        pictures.append(plots.bits_per_dim_curve(curves, path, f"{config.name}: bits/dim"))
    return pictures


# --------------------------------------------------------------------------- reloading a run


def load_run(run_dir: str | Path) -> tuple[cfg.Config, Problem, Flow, Any]:
    """(config, problem, flow, params) of a run folder, params from its last checkpoint.

    The params are the best by validation NLL when the run validated, else the last ones; the
    standardisation is the one stored with them in the checkpoint.
    """
    from flowjax_lab.checkpoint import Checkpointer  # noqa: PLC0415

    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    ckpt = Checkpointer(run_dir / "checkpoints", keep=max(config.train.keep, 1))
    _, meta, saved = ckpt.read_meta()
    s = saved.get("standardizer")
    standardizer = (
        None if s is None else D.Standardizer(*(jnp.asarray(s[k]) for k in ("mean", "std")))
    )
    problem = build_problem(config, standardizer)
    flow = build_flow(config, problem.event_shape or problem.dim)
    name = "best_params" if meta.get("best_step") is not None else "params"
    like = jax.eval_shape(flow.init, jax.random.key(0))  # shapes only, no compile
    like = {name: jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), like)}
    trees, _, _ = ckpt.restore(like)  # reads only that tree
    return config, problem, flow, trees[name]


def _run_config(run_dir: str | Path) -> cfg.Config:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints").is_dir():
        raise ValueError(f"{run_dir} is not a run folder (needs config.yaml and checkpoints/)")
    return cfg.load_config(run_dir / "config.yaml")


def _eval_key(config: cfg.Config) -> jax.Array:
    return jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1), 3)[2]


def evaluate(run_dir: str | Path, iwae_k: int | None = None, iwae_chunk: int | None = None) -> dict:
    """The final metrics of a saved run, recomputed from its config and checkpoint.

    ``iwae_k`` / ``iwae_chunk``: for a VAE run, the importance samples of its test log p(x)
    (default: the config's ``eval.iwae_k``, 5000) and how many are drawn at a time. The test
    rows are split over the run's ``train.devices`` (null: all devices) as in training.
    """
    config = _run_config(run_dir)
    mesh = _mesh(config.train.devices)
    if config.model.name == "vae":
        return _vae().evaluate(run_dir, config, iwae_k, iwae_chunk, mesh=mesh)
    if iwae_k is not None or iwae_chunk is not None:
        raise ValueError(f"--iwae-k / --iwae-chunk apply to VAE runs; {run_dir} is a flow run")
    config, problem, flow, params = load_run(run_dir)
    return _evaluate(config, problem, flow, params, _eval_key(config), mesh)


def sample(run_dir: str | Path, n: int, seed: int = 0) -> np.ndarray:
    """n samples (n, dim) from a saved run's model, in data units (digits: pixels in [0, 1))."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    config = _run_config(run_dir)
    if config.model.name == "vae":
        return _vae().sample(run_dir, config, n, seed)
    _, problem, flow, params = load_run(run_dir)
    return _samples(problem, flow, params, jax.random.key(seed), n)
