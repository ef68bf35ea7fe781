"""VAE experiments: a config with ``model.name: vae`` -> ``fl.vae.vae`` -> ``fl.fit`` -> run folder.

``experiment.run``, ``experiment.evaluate`` and ``experiment.sample`` hand VAE configs to this
module. The run folder is the one of every experiment (``config.yaml``, ``metrics.jsonl``,
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

import inspect
import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flowjax_lab import config as cfg
from flowjax_lab import plots
from flowjax_lab.problems import Problem, build_optimizer, build_problem, mean_se
from flowjax_lab.sharding import data_size, sharded_batch_eval


def _vae_module():
    from flowjax_lab import vae  # noqa: PLC0415  (imported on use: it sits above problems)

    return vae


def build_vae(config: cfg.Config, dim: int):
    """``fl.vae.vae(data_shape=(dim,), hidden=model.hidden, **model.params)``, keys checked."""
    factory = _vae_module().vae
    allowed = [
        p for p in inspect.signature(factory).parameters if p not in ("data_shape", "hidden")
    ]
    for key in config.model.params:
        if key not in allowed:
            raise ValueError(
                f"config: unknown key 'model.params.{key}' for fl.vae.vae; allowed keys: {allowed}"
            )
    return factory(data_shape=(dim,), hidden=config.model.hidden, **config.model.params)


def fit_objective(objective: Any) -> Any:
    """The config's VAE objective in ``fl.fit``'s form: "elbo", {"iwae": int k} or
    {"iwae_dreg": int k}."""
    if isinstance(objective, dict):
        return {name: int(k) for name, k in objective.items()}
    return objective


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


def _keys(config: cfg.Config):
    """(init, fit, eval) keys, the same split as flow experiments use."""
    return jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1), 3)


def _bounds(fn, params, x, key, chunk: int = 1000) -> np.ndarray:
    """``fn(params, rows, key)`` (per-row bounds) over the rows of x in fixed-size chunks (one
    compile, bounded memory); chunk i uses fold_in(key, i)."""
    values = []
    for i, start in enumerate(range(0, len(x), chunk)):
        part = x[start : start + chunk]
        pad = np.concatenate([part, np.repeat(part[:1], chunk - len(part), 0)], 0)
        values.append(np.asarray(fn(params, pad, jax.random.fold_in(key, i)))[: len(part)])
    return np.concatenate(values)


def _mean_bound(fn, params, x, key) -> float:
    return float(np.mean(_bounds(fn, params, x, key)))


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
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"iwae_test_log_px: {name} must be an integer >= 1, got {value!r}")
    x = np.asarray(x, np.float32)
    model.check_data(x, "iwae_test_log_px")

    def per_image(p, xb, kb):
        return _vae_module().iwae_log_likelihood(model, p, xb, kb, k=k, chunk=chunk)

    if mesh is None:
        estimate = jax.jit(per_image)
    else:
        estimate = sharded_batch_eval(per_image, mesh)
        batch *= data_size(mesh)
    out = []
    for b, start in enumerate(range(0, len(x), batch)):
        part = x[start : start + batch]
        padded = np.concatenate([part, np.repeat(part[:1], batch - len(part), 0)], 0)
        out.append(np.asarray(estimate(params, padded, jax.random.fold_in(key, b)))[: len(part)])
    return np.concatenate(out)


def run(config: cfg.Config, *, progress: bool | None = None):
    """Train the config's VAE and write its run folder (see the module docstring)."""
    from flowjax_lab import experiment  # noqa: PLC0415  (the shared run-folder helpers)
    from flowjax_lab.training import fit  # noqa: PLC0415

    problem = build_problem(config)
    model = build_vae(config, problem.dim)
    k_init, k_fit, k_eval = _keys(config)
    params = jax.jit(model.init)(k_init)
    elbo = jax.jit(model.elbo)
    val_init = _mean_bound(elbo, params, problem.val, k_eval) if len(problem.val) else None
    tc, main = config.train, jax.process_index() == 0
    mesh = experiment._mesh(tc.devices)
    run_dir = experiment._new_run_dir(config)
    if main:  # one writer in a multi-process run; every process reads the checkpoints
        (run_dir / "config.yaml").write_text(cfg.dump(config))
    result = fit(
        k_fit,
        model,
        params,
        objective=fit_objective(config.objective),
        data=problem.train,
        binarize=_binarize(config),
        steps=tc.steps,
        batch_size=tc.batch_size,
        optimizer=build_optimizer(tc),
        val_data=problem.val if len(problem.val) else None,
        val_every=tc.val_every,
        patience=tc.patience,
        checkpoint_dir=run_dir / "checkpoints",
        checkpoint_every=tc.checkpoint_every,
        keep=tc.keep,
        resume=tc.resume,
        progress=progress and main,
        config={"experiment": cfg.to_dict(config)},
        mesh=mesh,
    )
    metrics = evaluate_params(config, problem, model, result.params, k_eval, mesh=mesh)
    metrics.update(val_elbo_init=val_init, steps=int(result.step), best_step=result.best_step)
    if not main:
        return experiment.RunResult(run_dir, result.params, result.history, metrics, [])
    with open(run_dir / "metrics.jsonl", "w") as f:
        for row in experiment._metric_rows(result.history, tc.log_every):
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"summary": True, **metrics}) + "\n")
    pictures = _plots(config, problem, model, result.params, result.history, run_dir, k_eval)
    return experiment.RunResult(run_dir, result.params, result.history, metrics, pictures)


def evaluate_params(
    config: cfg.Config,
    problem: Problem,
    model,
    params,
    key,
    iwae_k: int | None = None,
    iwae_chunk: int | None = None,
    mesh=None,
) -> dict:
    """Test log p(x) by IWAE (k = ``iwae_k``, default ``eval.iwae_k``) with its standard error,
    the test and validation ELBO; nats per image. On a ``mesh`` the IWAE images are split over
    its data devices (`iwae_test_log_px`)."""
    k = config.eval.iwae_k if iwae_k is None else iwae_k
    chunk = config.eval.iwae_chunk if iwae_chunk is None else iwae_chunk
    for name, value in (("iwae_k", k), ("iwae_chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    k_test, k_elbo, k_val = jax.random.split(key, 3)
    log_px = iwae_test_log_px(model, params, problem.test, k_test, k, chunk, mesh=mesh)
    out: dict[str, Any] = {}
    out["test_log_px"], out["test_log_px_se"] = mean_se(np.asarray(log_px))
    out["iwae_k"] = k
    elbo = jax.jit(model.elbo)
    out["test_elbo"], out["test_elbo_se"] = mean_se(_bounds(elbo, params, problem.test, k_elbo))
    if len(problem.val):
        out["val_elbo"] = _mean_bound(elbo, params, problem.val, k_val)
    return out


def _plots(config, problem: Problem, model, params, history, run_dir: Path, key) -> list[Path]:
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


# --------------------------------------------------------------------------- reloading a run


def load_run(run_dir: str | Path, config: cfg.Config):
    """(problem, model, params) of a VAE run folder: the best params by validation bound when
    the run validated, else the last."""
    from flowjax_lab.checkpoint import Checkpointer  # noqa: PLC0415

    ckpt = Checkpointer(Path(run_dir) / "checkpoints", keep=max(config.train.keep, 1))
    _, meta, _ = ckpt.read_meta()
    problem = build_problem(config)
    model = build_vae(config, problem.dim)
    name = "best_params" if meta.get("best_step") is not None else "params"
    like = jax.eval_shape(model.init, jax.random.key(0))  # shapes only, no compile
    like = {name: jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), like)}
    trees, _, _ = ckpt.restore(like)
    return problem, model, trees[name]


def evaluate(run_dir, config: cfg.Config, iwae_k=None, iwae_chunk=None, mesh=None) -> dict:
    """The test log p(x) (IWAE, k = ``iwae_k`` or the config's) and ELBOs of a saved VAE run."""
    problem, model, params = load_run(run_dir, config)
    key = _keys(config)[2]
    return evaluate_params(config, problem, model, params, key, iwae_k, iwae_chunk, mesh=mesh)


def sample(run_dir, config: cfg.Config, n: int, seed: int = 0) -> np.ndarray:
    """n decoder means at prior samples, (n, dim) in [0, 1] for a Bernoulli likelihood."""
    _, model, params = load_run(run_dir, config)
    return np.asarray(jax.jit(model.sample, static_argnums=2)(params, jax.random.key(seed), n))
