"""Flow experiments: a config's flow built, fitted (``fl.fit`` arguments), evaluated, plotted.

The pieces of the flow record that ``experiment.run`` runs (see ``run.py``). Metrics: test NLL
in data units (and bits/dim for pixel data); for a target ELBO, log Z and ESS.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flowjax_lab import data as D
from flowjax_lab.experiment import config as cfg
from flowjax_lab.experiment import plots
from flowjax_lab.experiment.build import (
    Problem,
    build_flow,
    in_data_units,
    pixels_to_model_units,
    true_log_z,
)
from flowjax_lab.experiment.evaluation import chunked
from flowjax_lab.flow import Flow, data_init, sample_at_temperature
from flowjax_lab.objectives import importance_diagnostics, mean_and_se
from flowjax_lab.sharding import sharded_log_prob


def build(config: cfg.Config, problem: Problem) -> Flow:
    """The config's flow for the problem's events."""
    return build_flow(config, problem.event_shape or problem.dim)


def init(flow: Flow, problem: Problem, key) -> Any:
    """Initial params: data-dependent (actnorm) on the first training rows, else ``flow.init``."""
    if problem.train is None:
        return jax.jit(flow.init)(key)
    first = problem.train[: 4096 if problem.event_shape is None else 256]
    return jax.jit(lambda k, x: data_init(flow, k, x))(key, first)  # one compile, not per op


def fit_args(config: cfg.Config, problem: Problem) -> dict:
    """The flow-specific ``fl.fit`` keywords: data (integer pixels when dequantised every step),
    the batch maps, the target and the validation rows."""
    tc, per_step = config.train, problem.train_pixels is not None
    val = problem.val[: tc.val_rows] if problem.val is not None and len(problem.val) else None
    return {
        "data": problem.train_pixels if per_step else problem.train,
        "dequantize": problem.num_levels if per_step else None,
        "preprocess": pixels_to_model_units(problem),
        "target_log_prob": problem.target_log_prob,
        "val_data": val,
    }


def initial_metrics(config, problem, flow, params, key) -> dict:
    return {}


def evaluate(config, problem: Problem, flow: Flow, params, key, mesh=None, iwae_k=None,
             iwae_chunk=None) -> dict:  # fmt: skip
    """Final metrics: test NLL in data units (and bits/dim for digits); ELBO, log Z, ESS.

    On a mesh the log densities are computed with the rows split over its devices."""
    if iwae_k is not None or iwae_chunk is not None:
        raise ValueError("--iwae-k / --iwae-chunk apply to VAE runs; this is a flow run")
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
                chunked(log_prob, params, x, chunk)
                if mesh is None
                else sharded_log_prob(flow, params, np.asarray(x, np.float32), mesh)
            )
            nll = -(lp + shift)  # per example, data units
            out[f"{split}_nll"], out[f"{split}_nll_se"] = mean_and_se(nll)
            if split == "test" and problem.data_log_prob is not None:
                true = -np.asarray(problem.data_log_prob(_to_data_units(problem, x)))
                out["test_true_nll"] = mean_and_se(true)[0]
                out["test_kl_gap"] = mean_and_se(nll - true)[0]
            if split == "test" and (problem.alpha is not None or problem.num_levels):
                bpd = D.bits_per_dim(
                    nll - _logit_logdet(problem, x),
                    problem.dim,
                    num_levels=problem.num_levels or D.DIGITS_NUM_LEVELS,
                )
                out["test_bits_per_dim"], out["test_bits_per_dim_se"] = mean_and_se(bpd)
            if split == "test" and problem.alpha is not None:
                out["test_log_lik"], out["test_log_lik_se"] = mean_and_se(-nll)
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


def history_metrics(problem: Problem, history: dict) -> dict:
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


# one compiled program per (flow, n, temperature), reused across calls
_draw = jax.jit(sample_at_temperature, static_argnums=(0, 3, 4))


def sample(problem: Problem, flow: Flow, params, key, n: int, temperature=1.0) -> np.ndarray:
    """n model samples in data units (pixel intensities in [0, 1) for digits and images), at
    ``temperature`` (`fl.sample_at_temperature`)."""
    x = _to_data_units(problem, np.asarray(_draw(flow, params, key, n, float(temperature))))
    if problem.alpha is not None:
        x = np.asarray(D.inverse_logit_transform(x, problem.alpha))
    return x


def _image_shape(problem: Problem) -> tuple[int, int] | None:
    """(H, W) of the pixel data's images, for the samples grid (None: not images)."""
    if problem.event_shape is not None:
        return tuple(problem.event_shape[:2])
    side = math.isqrt(problem.dim) if problem.alpha is not None else 0
    return (side, side) if side * side == problem.dim and side > 0 else None


def plot(config, problem: Problem, flow: Flow, params, history, run_dir, key) -> list[Path]:
    if not config.output.plots:
        return []
    images = _image_shape(problem)
    n = min(config.eval.num_samples, 20000 if images is None else 64)
    samples = sample(problem, flow, params, key, n, config.eval.temperature)
    if images is not None:  # one channel of each image, as (n, H * W) rows
        samples = samples.reshape(n, *images, -1)[..., 0].reshape(n, -1)
    log_density = data = target_lp = None
    if problem.dim == 2:
        lp = in_data_units(flow, problem)
        log_density = lambda pts: chunked(lp, params, pts, 8192)  # noqa: E731
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
