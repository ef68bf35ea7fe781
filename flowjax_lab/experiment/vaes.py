"""VAE experiments: a config with ``model.name: vae`` -> ``fl.vae.vae`` -> ``fl.fit`` -> run folder.

The pieces of the VAE record that ``experiment.run`` runs (see ``run.py``). The run folder is
the one of every experiment (``config.yaml``, ``metrics.jsonl``,
``checkpoints/``, ``loss.png``) plus ``reconstructions.png`` (test images, each above its
reconstruction: the decoder's mean at a posterior sample) and ``samples.png`` (decoder means at
prior samples).

Metrics: ``test_log_px`` is the test log p(x) estimated by the IWAE bound with
``eval.iwae_k`` importance samples per image (5000, as the IWAE paper; a lower bound that
tightens as k grows), averaged over the test images, with ``test_log_px_se``, its standard error
over images; drawn ``eval.iwae_chunk`` samples at a time so memory stays at one chunk's
activations. ``test_elbo`` (one posterior sample per image) and ``val_elbo`` / ``val_elbo_init``
(the validation ELBO after and before training) come with it. All in nats per image.

Cost of the test log p(x): one encoder pass and k decoder passes per image; on 2 CPU cores,
MNIST's 10,000 test images at k = 5000 (MLP 2 x 200) take several minutes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flowjax_lab import vae as V
from flowjax_lab.checks import positive_int
from flowjax_lab.experiment import config as cfg
from flowjax_lab.experiment import plots
from flowjax_lab.experiment.build import Problem, build_vae
from flowjax_lab.experiment.evaluation import chunked
from flowjax_lab.objectives import mean_and_se
from flowjax_lab.sharding import data_size, sharded_batch_eval

BOUND_CHUNK = 1000  # rows per ELBO call in evaluation


def build(config: cfg.Config, problem: Problem) -> V.VAE:
    """The config's VAE for the problem's (dim,) rows."""
    return build_vae(config, problem.dim)


def init(model: V.VAE, problem: Problem, key) -> Any:
    return jax.jit(model.init)(key)


def fit_args(config: cfg.Config, problem: Problem) -> dict:
    """The VAE-specific ``fl.fit`` keywords: the data, its binarisation, the validation rows."""
    val = problem.val if len(problem.val) else None
    return {"data": problem.train, "binarize": _binarize(config), "val_data": val}


def _mean_elbo(model, params, x, key) -> float:
    return float(np.mean(chunked(jax.jit(model.elbo), params, x, BOUND_CHUNK, key)))


def initial_metrics(config, problem: Problem, model, params, key) -> dict:
    """The validation ELBO before training (``val_elbo_init``)."""
    return {"val_elbo_init": _mean_elbo(model, params, problem.val, key) if len(problem.val) else None}


def history_metrics(problem: Problem, history: dict) -> dict:
    return {}


def _binarize(config: cfg.Config) -> str | None:
    """ "dynamic" (a fresh Bernoulli draw of the training intensities every step) for binarised
    data sets under a Bernoulli likelihood, else None."""
    binary = config.data.name in cfg.BINARIZED_DATA
    bernoulli = config.model.params.get("likelihood", "bernoulli") == "bernoulli"
    return "dynamic" if binary and bernoulli else None


def image_shape(dim: int) -> tuple[int, int] | None:
    """(side, side) for square images (784 -> 28 x 28, 64 -> 8 x 8), else None."""
    side = math.isqrt(dim)
    return (side, side) if side * side == dim else None


def iwae_test_log_px(
    model, params, x, key, k: int = 5000, chunk: int = 250, batch: int = 4, mesh=None
) -> np.ndarray:
    """Per-image test log p(x) by IWAE-k: ``fl.vae.iwae_log_likelihood`` on ``batch`` images at
    a time (one compile; the last batch padded), so memory stays at batch x chunk decoder
    activations whatever the test set's size. Image i of batch b uses fold_in(key, b).

    With a ``mesh`` each call takes ``batch`` images per data device, split over the devices by
    `sharding.sharded_batch_eval` (so ``batch=1`` on 4 devices equals ``batch=4`` on one).

    Cost: len(x) k decoder passes; small calls (batch x chunk ~ 1000 samples) ran fastest on
    2 CPU cores (the activations stay in cache).
    """
    for name, value in (("k", k), ("chunk", chunk), ("batch", batch)):
        positive_int(value, f"iwae_test_log_px: {name}")
    x = np.asarray(x, np.float32)
    model.check_data(x, "iwae_test_log_px")

    def per_image(p, xb, kb):
        return V.iwae_log_likelihood(model, p, xb, kb, k=k, chunk=chunk)

    if mesh is None:
        estimate = jax.jit(per_image)
    else:
        estimate = sharded_batch_eval(per_image, mesh)
        batch *= data_size(mesh)
    return chunked(estimate, params, x, batch, key)


def evaluate(
    config: cfg.Config,
    problem: Problem,
    model,
    params,
    key,
    mesh=None,
    iwae_k: int | None = None,
    iwae_chunk: int | None = None,
) -> dict:
    """Test log p(x) by IWAE (k = ``iwae_k``, default ``eval.iwae_k``) with its standard error,
    the test and validation ELBO; nats per image. On a ``mesh`` the IWAE images are split over
    its data devices (`iwae_test_log_px`)."""
    k = config.eval.iwae_k if iwae_k is None else iwae_k
    chunk = config.eval.iwae_chunk if iwae_chunk is None else iwae_chunk
    for name, value in (("iwae_k", k), ("iwae_chunk", chunk)):
        positive_int(value, name)
    k_test, k_elbo, k_val = jax.random.split(key, 3)
    log_px = iwae_test_log_px(model, params, problem.test, k_test, k, chunk, mesh=mesh)
    out: dict[str, Any] = {}
    out["test_log_px"], out["test_log_px_se"] = mean_and_se(np.asarray(log_px))
    out["iwae_k"] = k
    elbo = chunked(jax.jit(model.elbo), params, problem.test, BOUND_CHUNK, k_elbo)
    out["test_elbo"], out["test_elbo_se"] = mean_and_se(elbo)
    if len(problem.val):
        out["val_elbo"] = _mean_elbo(model, params, problem.val, k_val)
    return out


def plot(config, problem: Problem, model, params, history, run_dir: Path, key) -> list[Path]:
    if not config.output.plots:
        return []
    title = f"{config.name}: vae ({config.model.params.get('posterior', 'diagonal')} posterior)"
    paths = [plots.loss_curves(history, run_dir / "loss.png", title)]
    shape = image_shape(problem.dim)
    if shape is None:
        return paths
    k_rec, k_sample = jax.random.split(jax.random.fold_in(key, 7))
    n = min(config.eval.num_samples, 64)
    originals = problem.test[: max(n // 2, 1)]
    recon = np.asarray(jax.jit(model.reconstruct)(params, originals, k_rec))
    paths.append(
        plots.image_pairs(originals, recon, run_dir / "reconstructions.png", shape, title=title)
    )
    samples = np.asarray(jax.jit(model.sample, static_argnums=2)(params, k_sample, n))
    paths.append(plots.image_grid(samples, run_dir / "samples.png", shape=shape, title=title))
    return paths


def sample(problem: Problem, model, params, key, n: int, temperature=1.0) -> np.ndarray:
    """n decoder means at prior samples, (n, dim) in [0, 1] for a Bernoulli likelihood
    (``temperature`` must be 1: checked by `config.check_temperature`)."""
    del temperature
    return np.asarray(jax.jit(model.sample, static_argnums=2)(params, key, n))
