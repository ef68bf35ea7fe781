"""What a config builds: the flow or VAE, the problem (data splits and/or target), the optimizer.

``build_flow(config, dim)``, ``build_vae(config, dim)``, ``build_problem(config)`` and
``optimizer_for(train_config)`` are deterministic in the config (data splits from
``config.seed``); ``experiment.run`` runs them and ``experiment.load_run`` rebuilds them from a
saved run folder. Unknown names and params raise errors that name the key and the allowed values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowjax_lab import data as D
from flowjax_lab import models
from flowjax_lab import vae as V
from flowjax_lab.checks import positive_int
from flowjax_lab.experiment import config as cfg
from flowjax_lab.flow import Flow
from flowjax_lab.targets import QUADRATURE_LOG_Z, TARGETS, Target
from flowjax_lab.training import default_optimizer
from flowjax_lab.transforms.multiscale import max_levels

# --------------------------------------------------------------------------- models


def _ready_made(name: str, *fields: str) -> Callable[[int, cfg.ModelConfig], Flow]:
    """A builder: ``fl.models.<name>(dim, **{field: model.<field>}, **model.params)``."""

    def build(dim: int, model: cfg.ModelConfig) -> Flow:
        fn = getattr(models, name)
        kwargs = {f: getattr(model, f) for f in fields} | dict(model.params)
        allowed = [p for p in inspect.signature(fn).parameters if p != "dim"]
        for key in kwargs:
            if key not in allowed:
                raise ValueError(
                    f"config: unknown key 'model.params.{key}' for fl.models.{name}; "
                    f"allowed keys: {[p for p in allowed if p not in fields]}"
                )
        return fn(dim, **kwargs)

    return build


def _glow(image_shape: tuple[int, ...], model: cfg.ModelConfig) -> Flow:
    """``fl.models.glow(image_shape, **model.params)``; checks levels against the image first."""
    if not isinstance(image_shape, tuple) or len(image_shape) != 3:
        raise ValueError(
            f"config: model 'glow' needs image data (events (H, W, C)), got events of dimension "
            f"{image_shape}: use an image data set (mnist with preprocessing: dequantize, "
            "digits_images)"
        )
    allowed = [p for p in inspect.signature(models.glow).parameters if p != "image_shape"]
    for key in model.params:
        if key not in allowed:
            raise ValueError(
                f"config: unknown key 'model.params.{key}' for fl.models.glow; "
                f"allowed keys: {allowed}"
            )
    default = inspect.signature(models.glow).parameters["levels"].default
    levels, most = model.params.get("levels", default), max_levels(*image_shape[:2])
    if not isinstance(levels, int) or not 1 <= levels <= most:
        h, w, _ = image_shape
        raise ValueError(
            f"config key 'model.params.levels': {levels} levels need H and W divisible by "
            f"2^{levels}, but a {h}x{w} image can be squeezed at most {most} times: use levels "
            f"in [1, {most}] (or pad the image, e.g. data.params.pad for mnist)"
        )
    return models.glow(image_shape, **model.params)


MODELS: dict[str, Callable[[int, cfg.ModelConfig], Flow]] = {
    "glow": _glow,
    "maf": _ready_made("maf", "num_layers", "hidden", "bins"),
    "iaf": _ready_made("iaf", "num_layers", "hidden", "bins"),
    "realnvp": _ready_made("realnvp", "num_layers", "hidden"),
    "nsf": _ready_made("nsf", "num_layers", "hidden", "bins"),
    "naf": _ready_made("naf", "num_layers", "hidden"),
    "sospf": _ready_made("sospf", "num_layers", "hidden"),
    "planar": _ready_made("planar_flow", "num_layers"),
    "linear": _ready_made("linear_flow", "num_layers"),
}
"""Model builders by config name: ``fn(dim, model_config) -> Flow``. Add a model with one line."""


IMAGE_MODELS = ("glow",)


def build_flow(config: cfg.Config, dim: int | tuple[int, ...]) -> Flow:
    """The config's model for events of shape (dim,), or (H, W, C) images for image models."""
    name = config.model.name
    if name not in MODELS:
        raise ValueError(
            f"config key 'model.name': unknown model {name!r}; allowed: {sorted(MODELS)}"
        )
    if isinstance(dim, tuple) and name not in IMAGE_MODELS:
        raise ValueError(
            f"config: model {name!r} takes vectors, but the data are images of shape {dim}: "
            f"use an image model ({', '.join(IMAGE_MODELS)}) or vector data (digits, mnist "
            "with preprocessing: maf)"
        )
    return MODELS[name](dim, config.model)


# --------------------------------------------------------------------------- data and targets

_DATA_PARAMS = {
    "gaussian_mixture": ("means", "scales", "weights"),
    "digits": ("alpha",),
    "binarized_mnist": ("binarization_seed",),
    "binarized_digits": ("binarization_seed",),
    "mnist": ("preprocessing", "alpha", "pad", "channels", "train_rows", "noise"),
    "digits_images": ("noise",),
}
NUM_LEVELS = {"digits": D.DIGITS_NUM_LEVELS, "digits_images": D.DIGITS_NUM_LEVELS, "mnist": 256}
"""Pixel levels L of the pixel data sets, for bits/dim on the integer-pixel scale."""
DATASETS = (*D.TOY_2D, *_DATA_PARAMS)


class Problem(NamedTuple):
    """What a run trains on. Data arrays are in model units (standardised when asked).

    dim: event dimension (H W C for images). train/val/test: (n, dim) numpy arrays, or
    (n, H, W, C) for images, or None. standardizer: the map from data to model units (None:
    identity; images are never standardised). target: the target in data units, or None.
    data_log_prob: exact log-density of the data in data units, when known. alpha: the logit
    alpha of digits and MAF-preprocessed MNIST (None otherwise). event_shape: (H, W, C) for
    images, None for vectors. num_levels: pixel levels L of pixel data (None otherwise).
    train_pixels: the training split's integer pixels when training draws fresh dequantisation
    noise every step (``data.params.noise: per_step``, images' default, optional for
    MAF-preprocessed MNIST; ``train`` is then one fixed draw, for data init and plots), else
    None. For MAF-preprocessed MNIST, `pixels_to_model_units` maps each step's dequantised
    batch to the model's units.
    """

    dim: int
    train: np.ndarray | None
    val: np.ndarray | None
    test: np.ndarray | None
    standardizer: D.Standardizer | None
    target: Target | None
    target_log_prob: Callable | None  # of one event in model units
    data_log_prob: Callable | None
    alpha: float | None
    event_shape: tuple[int, ...] | None = None
    num_levels: int | None = None
    train_pixels: np.ndarray | None = None


def _load_data(dc: cfg.DataConfig, key: jax.Array):
    """(train, val, test) in data units, the exact log-density if known, the digits alpha, and
    the training pixels when training dequantises every step (else None)."""
    extra = [k for k in dc.params if k not in _DATA_PARAMS.get(dc.name, ())]
    if dc.name not in DATASETS:
        raise ValueError(
            f"config key 'data.name': unknown data set {dc.name!r}; allowed: {DATASETS}"
        )
    if extra:
        raise ValueError(
            f"config: unknown key 'data.params.{extra[0]}' for data set {dc.name!r}; "
            f"allowed keys: {list(_DATA_PARAMS.get(dc.name, ()))}"
        )
    k_sample, k_split = jax.random.split(key)
    if dc.name in cfg.BINARIZED_DATA:
        return _load_binarized(dc, key), None, None, None
    if dc.name in ("mnist", "digits_images"):
        return _load_pixel_data(dc, key)
    if dc.name == "digits":
        digits = D.load_digits(key, alpha=dc.params.get("alpha", 0.05), fractions=dc.fractions)
        return (digits.train, digits.val, digits.test), None, digits.alpha, None
    if dc.name == "gaussian_mixture":
        if "means" not in dc.params:
            raise ValueError("config: missing required key 'data.params.means'")
        mix = D.gaussian_mixture(
            dc.params["means"], dc.params.get("scales", 1.0), dc.params.get("weights")
        )
        sampler, log_prob = mix.sample, mix.log_prob
    else:
        sampler, log_prob = D.TOY_2D[dc.name], D.TOY_2D_LOG_PROB.get(dc.name)
    draw = jax.jit(  # one compile instead of one per eager op
        lambda k1, k2: tuple(D.train_val_test_split(k2, sampler(k1, dc.num_samples), dc.fractions))
    )
    return draw(k_sample, k_split), log_prob, None, None


def _load_binarized(dc: cfg.DataConfig, key: jax.Array):
    """(train intensities in [0, 1], fixed binary val, fixed binary test) of a binarised set."""
    seed = dc.params.get("binarization_seed", D.BINARIZATION_SEED)
    if dc.name == "binarized_mnist":
        b = D.load_binarized_mnist(seed)
    else:
        b = D.load_binarized_digits(key, dc.fractions, seed)
    return b.train, b.val, b.test


def _load_pixel_data(dc: cfg.DataConfig, key: jax.Array):
    """MNIST (MAF-paper vectors or dequantised images) or digits as 8x8x1 dequantised images.

    Every split is dequantised once, x = (p + u) / L with u from ``key``, and with
    ``data.params.noise: per_step`` (the default for images; MAF-preprocessed MNIST defaults
    to the paper's one fixed draw) the training split's integer pixels come back too (4th
    item), for ``fit(dequantize=L)`` to draw fresh noise every step; MNIST keeps its classic
    50k / 10k / 10k split (``fractions`` is not used), and the MAF preprocessing its own
    RandomState(42) noise for all three splits, so it does not depend on the seed.
    """
    k_split, k_noise = jax.random.split(key)
    if dc.name == "digits_images":
        px = D.load_digits_images(k_split, dc.fractions)
        splits = [px.train, px.val, px.test]
        alpha = None
    else:
        prep = dc.params.get("preprocessing", "maf")
        rows = dc.params.get("train_rows")
        if prep not in ("maf", "dequantize"):
            raise ValueError(
                f"config key 'data.params.preprocessing': expected 'maf' or 'dequantize', "
                f"got {prep!r}"
            )
        other = ("alpha",) if prep == "dequantize" else ("pad", "channels")
        wrong = [k for k in other if k in dc.params]
        if wrong:
            raise ValueError(
                f"config key 'data.params.{wrong[0]}': not used by preprocessing {prep!r} "
                "(alpha is for 'maf'; pad and channels are for 'dequantize')"
            )
        if rows is not None:
            positive_int(rows, "config key 'data.params.train_rows'", maximum=50000)
        if prep == "maf":
            per_step = _noise(dc, "fixed") == "per_step"  # the paper: one draw
            m = D.load_mnist_maf(alpha=dc.params.get("alpha", D.MAF_ALPHA))
            pixels = (
                np.asarray(D.load_mnist_pixels().train[:rows], np.float32) if per_step else None
            )
            return (m.train[:rows], m.val, m.test), None, m.alpha, pixels
        px = D.load_mnist_images(pad=dc.params.get("pad", 0), channels=dc.params.get("channels", 1))
        splits, alpha = [px.train[:rows], px.val, px.test], None
    noise = _noise(dc, "per_step")
    levels = NUM_LEVELS[dc.name]
    keys = jax.random.split(k_noise, 3)
    fixed = tuple(D.dequantize_images(k, p, levels) for k, p in zip(keys, splits))
    return fixed, None, alpha, (np.asarray(splits[0], np.float32) if noise == "per_step" else None)


def _noise(dc: cfg.DataConfig, default: str) -> str:
    noise = dc.params.get("noise", default)
    if noise not in ("per_step", "fixed"):
        raise ValueError(
            f"config key 'data.params.noise': expected 'per_step' or 'fixed', got {noise!r}"
        )
    return noise


def _load_target(tc: cfg.TargetConfig) -> Target:
    if tc.name not in TARGETS:
        raise ValueError(
            f"config key 'target.name': unknown target {tc.name!r}; allowed: {sorted(TARGETS)}"
        )
    allowed = list(inspect.signature(TARGETS[tc.name]).parameters)
    for key in tc.params:
        if key not in allowed:
            raise ValueError(
                f"config: unknown key 'target.params.{key}' for target {tc.name!r}; "
                f"allowed keys: {allowed}"
            )
    return TARGETS[tc.name](**tc.params)


def build_problem(config: cfg.Config, standardizer: D.Standardizer | None = None) -> Problem:
    """Data (split, standardised) and/or target of a config; deterministic in ``config.seed``.

    ``standardizer`` replaces the one fitted on the training split (when reloading a run).
    """
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    train = val = test = data_log_prob = alpha = target = target_lp = train_pixels = None
    dim = event_shape = num_levels = None
    if config.data is not None:
        (train, val, test), data_log_prob, alpha, train_pixels = _load_data(config.data, key)
        event_shape = tuple(np.shape(train)[1:]) if np.ndim(train) > 2 else None
        num_levels = NUM_LEVELS.get(config.data.name)
        D.check_data(np.reshape(train, (len(train), -1)), name="training data")
        binary = config.data.name in cfg.BINARIZED_DATA  # {0, 1} data: never standardised
        if standardizer is None and config.data.standardize and event_shape is None and not binary:
            standardizer = jax.jit(D.fit_standardizer)(train)
        if standardizer is not None:
            train, val, test = jax.jit(lambda s, *a: [D.standardize(s, x) for x in a])(
                standardizer, train, val, test
            )
        train, val, test = (np.asarray(a, np.float32) for a in (train, val, test))
        dim = int(np.prod(train.shape[1:]))
    if config.target is not None:
        target = _load_target(config.target)
        if dim is not None and target.dim != dim:
            raise ValueError(f"data dimension {dim} does not match target dimension {target.dim}")
        dim, target_lp = target.dim, target.log_prob
        if standardizer is not None:  # pi_s(s) = pi(x(s)) |dx/ds|, x(s) = s * std + mean
            s, log_std = standardizer, jnp.sum(jnp.log(standardizer.std))
            target_lp = lambda z, s=s: target.log_prob(D.unstandardize(s, z)) + log_std  # noqa: E731
    return Problem(
        dim,
        train,
        val,
        test,
        standardizer,
        target,
        target_lp,
        data_log_prob,
        alpha,
        event_shape,
        num_levels,
        train_pixels,
    )


def pixels_to_model_units(problem: Problem) -> Callable | None:
    """For MAF-preprocessed MNIST trained on fresh noise: ``x -> standardize(logit(alpha + (1 -
    2 alpha) x))``, the map from a dequantised pixel batch to the model's units (``fit``'s
    ``preprocess``); None for every other problem (their pixels are the model's units)."""
    if problem.train_pixels is None or problem.alpha is None:
        return None
    s, alpha = problem.standardizer, problem.alpha

    def to_model_units(x):
        y = D.logit_transform(x, alpha)
        return y if s is None else D.standardize(s, y)

    return to_model_units


def true_log_z(config: cfg.Config, target: Target) -> float | None:
    """The target's log Z: closed form, or the quadrature value on [-4, 4]^2 for U1-U4."""
    if target.log_z is not None:
        return float(target.log_z)
    return QUADRATURE_LOG_Z.get(config.target.name) if not config.target.params else None


# --------------------------------------------------------------------------- VAE, optimizer


def build_vae(config: cfg.Config, dim: int) -> V.VAE:
    """``fl.vae.vae(data_shape=(dim,), hidden=model.hidden, **model.params)``, keys checked."""
    allowed = [p for p in inspect.signature(V.vae).parameters if p not in ("data_shape", "hidden")]
    for key in config.model.params:
        if key not in allowed:
            raise ValueError(
                f"config: unknown key 'model.params.{key}' for fl.vae.vae; allowed keys: {allowed}"
            )
    return V.vae(data_shape=(dim,), hidden=config.model.hidden, **config.model.params)


def optimizer_for(tc: cfg.TrainConfig) -> optax.GradientTransformation:
    """``fl.default_optimizer`` with the config's ``train.lr / schedule / warmup_steps / clip``."""
    return default_optimizer(tc.steps, tc.lr, tc.warmup_steps, tc.clip, tc.schedule)


def in_data_units(flow: Flow, problem: Problem) -> Callable:
    """log p(x) in data units: log p_model(standardize(x)) + log|det d standardize / dx|."""
    s = problem.standardizer
    shift = 0.0 if s is None else D.standardize_logdet(s)
    to_model = (lambda x: x) if s is None else (lambda x: D.standardize(s, x))
    return jax.jit(lambda params, x: flow.log_prob(params, to_model(x)) + shift)


def standardizer_json(problem: Problem) -> dict | None:
    s = problem.standardizer
    return (
        None
        if s is None
        else {"mean": np.asarray(s.mean).tolist(), "std": np.asarray(s.std).tolist()}
    )


def standardizer_from_json(saved: dict | None) -> D.Standardizer | None:
    """The ``Standardizer`` that `standardizer_json` wrote (None stays None)."""
    if saved is None:
        return None
    return D.Standardizer(*(jnp.asarray(saved[k]) for k in ("mean", "std")))
