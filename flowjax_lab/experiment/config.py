"""The typed experiment schema: YAML in, a validated tree of frozen dataclasses out.

A config is data, never code: ``load_config`` parses YAML with a safe loader, applies
``--set a.b=value`` overrides (values parsed as YAML scalars), then checks every key against the
dataclasses below. An unknown key, a wrong type or a missing required field is a ``ValueError``
that names the key path and lists the allowed keys. ``to_dict`` gives back plain YAML-able data
(``load_config`` of that data gives the same config).

Example:
  >>> cfg = load_config("configs/maf_two_moons.yaml", ["train.steps=500", "model.hidden=[32, 32]"])
  >>> cfg.model.hidden
  (32, 32)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from flowjax_lab.checks import positive_int
from flowjax_lab.experiment.typed import PARSERS, apply_overrides, build, load_yaml, parse_override
from flowjax_lab.training.objective import (
    TARGET_TERMS,
    Objective,
    check_model_kind,
    parse_objective,
)

# the config's objective: the one parser of fl.fit, its errors prefixed "config key "
PARSERS[Objective] = lambda value, path: parse_objective(value, path, "config key ")

BINARIZED_DATA = ("binarized_mnist", "binarized_digits")


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class DataConfig:
    """A data set for maximum likelihood.

    name: a 2-D toy set (two_moons, eight_gaussians, checkerboard, pinwheel, rings,
      two_spirals), ``gaussian_mixture`` (params: means, scales, weights), ``digits``
      (params: alpha, the logit alpha, default 0.05); for model "vae" ``binarized_mnist`` /
      ``binarized_digits`` (params: binarization_seed, default 0; never standardised; training
      rows are intensities binarised afresh each step, validation and test are fixed); pixel
      data: ``mnist`` (params: preprocessing "maf" (default; 784-D vectors in logit space, the MAF paper's, with alpha
      default 1e-6) or "dequantize" (images (28 + 2 pad, 28 + 2 pad, channels), x = (p + u) /
      256); train_rows: use the first that many training rows) and ``digits_images`` (sklearn's
      digits as 8x8x1 images, x = (p + u) / 17); for both image sets ``noise``: "per_step"
      (default: training draws fresh u every step, ``fit(dequantize=L)``) or "fixed" (one draw
      per image); validation and test always use one fixed draw. Images are never standardised.
    num_samples: rows drawn for the sampled sets (digits has its own 1797).
    fractions: train / validation / test fractions.
    standardize: fit a per-feature standardiser on train; NLLs are reported in data units.
    """

    name: str
    num_samples: int = 20000
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    standardize: bool = True
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetConfig:
    """An unnormalised target for reverse KL: ``fl.targets.TARGETS[name](**params)``."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """A ready-made model by name (see ``problems.MODELS``); ``params`` go to the builder.

    For ``name: vae`` only ``hidden`` (the encoder and decoder MLP widths) is read; the rest of
    ``fl.vae.vae``'s arguments (latent_dim, likelihood, posterior, iaf_steps, sylvester_steps,
    sylvester_kind, num_vectors, prior, ...) go in ``params``.
    """

    name: str
    num_layers: int = 5
    hidden: tuple[int, ...] = (64, 64)
    bins: int = 8
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: ``fl.default_optimizer(steps, lr, warmup_steps, clip, schedule)``.

    The defaults are ``fl.fit``'s (a warm-up of None: max(1, min(100, steps // 10)) steps, then
    a cosine decay to lr / 10; clipping at global norm 1), so a config and ``fl.fit`` with the
    same settings train the same way.

    val_every / patience: validation NLL every that many steps (needs data), early stopping after
    ``patience`` validations without improvement (None: never). checkpoint_every / keep:
    checkpoints, the last ``keep`` kept. resume: continue from the run folder's last checkpoint
    (needs ``output.run_id: seed``). log_every: steps between rows of metrics.jsonl.
    devices: data-parallel devices (``fl.fit(mesh=)``): null for all devices (of all processes)
    when there are more than one, else one device; n for the first n (1: no mesh).
    ``batch_size`` must divide evenly over them.
    val_rows: validate during training on the first that many validation rows (None: all;
    image flows on 10,000 images at once need more memory than a CPU has); the final metrics
    always use the whole split.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    schedule: Literal["constant", "cosine", "warmup_cosine"] = "warmup_cosine"
    warmup_steps: int | None = None
    clip: float | None = 1.0
    val_every: int = 100
    patience: int | None = None
    checkpoint_every: int = 500
    keep: int = 3
    resume: bool = False
    log_every: int = 10
    devices: int | None = None
    val_rows: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation and plots.

    num_samples: base samples for ELBO / log Z / ESS and for the sample plot.
    iwae_k / iwae_chunk: a VAE's test log p(x) is the IWAE bound with ``iwae_k`` importance
      samples per image (5000, as the IWAE paper), drawn ``iwae_chunk`` at a time for 4 images
      at a time.
    grid_size: points per axis of the 2-D density plots.
    plot_range: (xmin, xmax, ymin, ymax) of the 2-D plots; None picks it from the data
      (or [-4, 4]^2 for targets).
    temperature: flows' sample plot and ``flowjax-lab sample`` draw x = g(T z)
      (`fl.sample_at_temperature`; Glow's figures use T = 0.7); 1 is plain sampling.
    """

    num_samples: int = 10000
    grid_size: int = 200
    plot_range: tuple[float, float, float, float] | None = None
    iwae_k: int = 5000
    iwae_chunk: int = 250
    temperature: float = 1.0


@dataclass(frozen=True)
class OutputConfig:
    """Run folders go to ``<root>/<name>-<timestamp>`` or ``<root>/<name>-seed<seed>``."""

    root: str = "runs"
    run_id: Literal["timestamp", "seed"] = "timestamp"
    plots: bool = True


@dataclass(frozen=True)
class Config:
    """One experiment: data and/or target -> model -> objective -> fit -> run folder.

    Give ``data`` (maximum likelihood), ``target`` (reverse KL) or both (a weighted mix or a
    schedule of the two). ``objective`` is "mle", "reverse_kl", weights such as
    {mle: 1.0, reverse_kl: 0.5}, or a schedule: a list of {start: step, objective: ...}.
    "reverse_kl_stl" is reverse KL with the sticking-the-landing gradient. Model "vae" takes
    "elbo", {iwae: k} (the IWAE bound with k >= 1 importance samples) or {iwae_dreg: k} (the
    same bound, trained with the DReG gradient) instead. Parsed by
    ``fl.training.parse_objective`` (the parser ``fl.fit`` uses) into an ``Objective``.
    """

    name: str
    model: ModelConfig
    seed: int = 0
    data: DataConfig | None = None
    target: TargetConfig | None = None
    objective: Objective = parse_objective("mle")
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def _validate_objective(config: Config) -> None:
    """The objective suits the model; the sections its terms need are there."""
    objective, where = config.objective, "config key 'objective'"
    is_vae = config.model.name == "vae"
    check_model_kind(objective, is_vae, f"model {config.model.name!r}", "config key ")
    for term in objective.needs_data:
        if config.data is None:
            raise ValueError(f"{where}: {term} needs a 'data' section")
    for term in (t for t in objective.used if t in TARGET_TERMS):
        if config.target is None:
            raise ValueError(f"{where}: {term} needs a 'target' section")


def _validate_vae(config: Config) -> None:
    """A VAE trains on data (binary for a Bernoulli likelihood); binarised data is VAE-only."""
    is_vae = config.model.name == "vae"
    data = config.data.name if config.data is not None else None
    if data in BINARIZED_DATA and not is_vae:
        raise ValueError(f"config key 'data.name': {data!r} is for model 'vae' only")
    if not is_vae:
        return
    if data is None or config.target is not None:
        raise ValueError("config: model 'vae' needs a 'data' section and no 'target'")
    likelihood = config.model.params.get("likelihood", "bernoulli")
    if likelihood == "bernoulli" and data not in BINARIZED_DATA:
        raise ValueError(
            f"config key 'data.name': a Bernoulli likelihood needs binary data, got {data!r}; "
            f"use one of {list(BINARIZED_DATA)} or model.params.likelihood: gaussian"
        )


def check_temperature(temperature, config: Config, where: str) -> float:
    """``temperature`` as a float > 0; a VAE takes only 1 (its samples are decoder means)."""
    if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
        raise ValueError(f"{where}: must be a positive number, got {temperature!r}")
    if config.model.name == "vae" and temperature != 1:
        raise ValueError(f"{where}: sampling at a temperature is for flows, not a vae")
    return float(temperature)


def validate(config: Config) -> Config:
    """Cross-field checks: an objective's needs (data, target), the VAE's, positive sizes."""
    if config.data is None and config.target is None:
        raise ValueError("config: give 'data' (for mle), 'target' (for reverse_kl) or both")
    _validate_objective(config)
    _validate_vae(config)
    positive = {
        "model.num_layers": config.model.num_layers,
        "train.steps": config.train.steps,
        "train.batch_size": config.train.batch_size,
        "train.val_every": config.train.val_every,
        "train.checkpoint_every": config.train.checkpoint_every,
        "train.keep": config.train.keep,
        "train.log_every": config.train.log_every,
        "train.devices": 1 if config.train.devices is None else config.train.devices,
        "eval.num_samples": config.eval.num_samples,
        "eval.grid_size": config.eval.grid_size,
        "eval.iwae_k": config.eval.iwae_k,
        "eval.iwae_chunk": config.eval.iwae_chunk,
    }
    if config.data is not None:
        positive["data.num_samples"] = config.data.num_samples
    if config.train.val_rows is not None:
        positive["train.val_rows"] = config.train.val_rows
    for key, value in positive.items():
        positive_int(value, f"config key '{key}'")
    if config.train.resume and config.output.run_id != "seed":
        raise ValueError("config key 'train.resume': needs output.run_id: seed (a fixed folder)")
    if config.train.patience is not None and config.data is None:
        raise ValueError("config key 'train.patience': early stopping needs a 'data' section")
    if config.train.lr <= 0:
        raise ValueError(f"config key 'train.lr': must be positive, got {config.train.lr}")
    check_temperature(config.eval.temperature, config, "config key 'eval.temperature'")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", config.name):
        raise ValueError(
            f"config key 'name': use letters, digits, '_', '-', '.'; got {config.name!r}"
        )
    return config


# --------------------------------------------------------------------------- public API


def from_dict(raw: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """A validated ``Config`` from plain data (as parsed from YAML), after ``overrides``."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    return validate(build(Config, apply_overrides(raw, overrides), ""))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Parse the YAML file at ``path``, apply ``a.b=value`` overrides and validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read config {str(path)!r}: {e.strerror}") from e
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        raise ValueError(f"config {str(path)!r} is not valid YAML: {e}") from e
    return from_dict({} if raw is None else raw, overrides)


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for saving: ``from_dict(to_dict(c)) == c``."""
    if isinstance(config, Objective):
        return config.spec
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (tuple, list)):
        return [to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def dump(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


__all__ = [
    "BINARIZED_DATA",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OutputConfig",
    "TargetConfig",
    "TrainConfig",
    "apply_overrides",
    "dump",
    "from_dict",
    "load_config",
    "parse_override",
    "to_dict",
    "validate",
]
