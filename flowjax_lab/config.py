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
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

OBJECTIVES = ("mle", "reverse_kl", "reverse_kl_stl")
VAE_OBJECTIVES = ("elbo", "iwae", "iwae_dreg")  # "elbo", {iwae: k}, {iwae_dreg: k}: for "vae"
BINARIZED_DATA = ("binarized_mnist", "binarized_digits")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


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
    ``fl.vae.vae``'s arguments (latent_dim, likelihood, posterior, iaf_steps, prior, ...) go in
    ``params``.
    """

    name: str
    num_layers: int = 5
    hidden: tuple[int, ...] = (64, 64)
    bins: int = 8
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One entry of an objective schedule: from step ``start`` on, use ``objective``."""

    start: int
    objective: Literal["mle", "reverse_kl", "reverse_kl_stl"] | dict[str, float]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: adam on a learning-rate ``schedule``, global-norm clipping at ``clip``.

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
    schedule: Literal["constant", "cosine", "warmup_cosine"] = "cosine"
    warmup_steps: int = 0
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
    """

    num_samples: int = 10000
    grid_size: int = 200
    plot_range: tuple[float, float, float, float] | None = None
    iwae_k: int = 5000
    iwae_chunk: int = 250


@dataclass(frozen=True)
class OutputConfig:
    """Run folders go to ``<root>/<name>-<timestamp>`` or ``<root>/<name>-seed<seed>``."""

    root: str = "runs"
    run_id: Literal["timestamp", "seed"] = "timestamp"
    plots: bool = True


Objective = (
    Literal["mle", "reverse_kl", "reverse_kl_stl", "elbo"] | dict[str, float] | tuple[Stage, ...]
)


@dataclass(frozen=True)
class Config:
    """One experiment: data and/or target -> model -> objective -> fit -> run folder.

    Give ``data`` (maximum likelihood), ``target`` (reverse KL) or both (a weighted mix or a
    schedule of the two). ``objective`` is "mle", "reverse_kl", weights such as
    {mle: 1.0, reverse_kl: 0.5}, or a schedule: a list of {start: step, objective: ...}.
    "reverse_kl_stl" is reverse KL with the sticking-the-landing gradient. Model "vae" takes
    "elbo", {iwae: k} (the IWAE bound with k >= 1 importance samples) or {iwae_dreg: k} (the
    same bound, trained with the DReG gradient) instead.
    """

    name: str
    model: ModelConfig
    seed: int = 0
    data: DataConfig | None = None
    target: TargetConfig | None = None
    objective: Objective = "mle"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# --------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {[f.name for f in dataclasses.fields(tp)]}"
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if tp is type(None):
        return "null"
    return {int: "int", float: "float", str: "str", bool: "bool"}.get(tp, str(tp))


def _error(path: str, tp: Any, value: Any) -> ValueError:
    return ValueError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")


def _same_kind(value: Any, tp: Any) -> bool:
    """Whether ``value`` has the shape of ``tp`` (mapping, list or scalar), before details."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) or origin is dict:
        return isinstance(value, Mapping)
    if origin is tuple:
        return isinstance(value, Sequence) and not isinstance(value, str)
    return not isinstance(value, (Mapping, list, tuple))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked against (and converted to) type ``tp``; ``path`` names it in errors."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        fitting = [a for a in options if _same_kind(value, a)]
        if len(fitting) == 1:  # one branch fits the value's shape: report its precise error
            return _convert(value, fitting[0], path)
        for arg in fitting:
            try:
                return _convert(value, arg, path)
            except ValueError:
                pass
        raise _error(path, tp, value)
    if origin is Literal:
        if value in args and isinstance(value, str):
            return value
        raise _error(path, tp, value)
    if origin is tuple:
        if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
            raise _error(path, tp, value)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise _error(path, tp, value)
        return tuple(_convert(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _error(path, tp, value)
        return {
            _convert(k, args[0], f"{path}"): _convert(v, args[1], f"{path}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise _error(path, tp, value)


def _build(cls: type, raw: Any, path: str) -> Any:
    """An instance of dataclass ``cls`` from a mapping, naming unknown and missing keys."""
    where = f"'{path}'" if path else "the top level"
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(raw, Mapping):
        raise ValueError(f"config {where}: expected a mapping with keys {names}, got {raw!r}")
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ValueError(f"config: unknown key '{key}'; allowed keys at {where}: {names}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name in raw:
            kwargs[f.name] = _convert(raw[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"config: missing required key '{key}'; keys at {where}: {names}")
    return cls(**kwargs)


def _check_weights(weights: Mapping[str, float], path: str) -> None:
    bad = [k for k in weights if k not in OBJECTIVES]
    if bad:
        raise ValueError(f"config: unknown key '{path}.{bad[0]}'; allowed keys: {list(OBJECTIVES)}")
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"config key '{path}': weights must be >= 0, not all 0, got {weights}")


def _objective_names(objective: Any, path: str) -> set[str]:
    """The objectives a config's ``objective`` uses (checking weights and schedule order)."""
    if isinstance(objective, str):
        return {objective}
    if isinstance(objective, dict) and _iwae_key(objective):
        return {_iwae_key(objective)}
    if isinstance(objective, dict):
        _check_weights(objective, path)
        return {k for k, w in objective.items() if w > 0}
    starts = [s.start for s in objective]
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(
            f"config key '{path}': a schedule needs increasing starts beginning at 0, got {starts}"
        )
    names: set[str] = set()
    for i, stage in enumerate(objective):
        names |= _objective_names(stage.objective, f"{path}[{i}].objective")
    return names


def _iwae_key(objective: Any) -> str | None:
    """ "iwae" or "iwae_dreg" when ``objective`` is {iwae: k} or {iwae_dreg: k}, else None."""
    keys = [k for k in ("iwae", "iwae_dreg") if isinstance(objective, dict) and k in objective]
    return keys[0] if keys else None


def _validate_vae(config: Config) -> None:
    """A VAE trains on data by "elbo" or {iwae: k}; binarised data goes only to a VAE."""
    objective, is_vae = config.objective, config.model.name == "vae"
    vae_objective = objective == "elbo" or _iwae_key(objective) is not None
    data = config.data.name if config.data is not None else None
    if is_vae != vae_objective:
        raise ValueError(
            f"config key 'objective': model 'vae' takes 'elbo', {{iwae: k}} or {{iwae_dreg: k}}, "
            "and those only "
            f"train model 'vae'; got objective {objective!r} for model {config.model.name!r}"
        )
    if data in BINARIZED_DATA and not is_vae:
        raise ValueError(f"config key 'data.name': {data!r} is for model 'vae' only")
    if not is_vae:
        return
    if isinstance(objective, dict):
        name = _iwae_key(objective)
        k = objective[name]
        if len(objective) != 1:
            extra = next(n for n in objective if n != name)
            raise ValueError(
                f"config: unknown key 'objective.{extra}'; give one of {{iwae: k}}, "
                "{iwae_dreg: k}"
            )
        if k != int(k) or k < 1:
            raise ValueError(f"config key 'objective.{name}': k must be an integer >= 1, got {k:g}")
    if data is None or config.target is not None:
        raise ValueError("config: model 'vae' needs a 'data' section and no 'target'")
    likelihood = config.model.params.get("likelihood", "bernoulli")
    if likelihood == "bernoulli" and data not in BINARIZED_DATA:
        raise ValueError(
            f"config key 'data.name': a Bernoulli likelihood needs binary data, got {data!r}; "
            f"use one of {list(BINARIZED_DATA)} or model.params.likelihood: gaussian"
        )
    for key in ("iwae_k", "iwae_chunk"):
        if getattr(config.eval, key) < 1:
            value = getattr(config.eval, key)
            raise ValueError(f"config key 'eval.{key}': must be an integer >= 1, got {value}")


def validate(config: Config) -> Config:
    """Cross-field checks: an objective's needs (data, target) and positive sizes."""
    if config.data is None and config.target is None:
        raise ValueError("config: give 'data' (for mle), 'target' (for reverse_kl) or both")
    _validate_vae(config)
    for name in _objective_names(config.objective, "objective"):
        if name in VAE_OBJECTIVES:  # the rest is checked by _validate_vae
            if isinstance(config.objective, tuple):
                raise ValueError(
                    f"config key 'objective': {name!r} cannot be part of a schedule; give "
                    "'elbo' or {iwae: k} alone"
                )
            continue
        need = "data" if name == "mle" else "target"  # reverse_kl and reverse_kl_stl
        if getattr(config, need) is None:
            raise ValueError(f"config key 'objective': {name} needs a '{need}' section")
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
    }
    if config.data is not None:
        positive["data.num_samples"] = config.data.num_samples
    if config.train.val_rows is not None:
        positive["train.val_rows"] = config.train.val_rows
    for key, value in positive.items():
        if value <= 0:
            raise ValueError(f"config key '{key}': must be positive, got {value}")
    if config.train.resume and config.output.run_id != "seed":
        raise ValueError("config key 'train.resume': needs output.run_id: seed (a fixed folder)")
    if config.train.patience is not None and config.data is None:
        raise ValueError("config key 'train.patience': early stopping needs a 'data' section")
    if config.train.lr <= 0:
        raise ValueError(f"config key 'train.lr': must be positive, got {config.train.lr}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", config.name):
        raise ValueError(
            f"config key 'name': use letters, digits, '_', '-', '.'; got {config.name!r}"
        )
    return config


# --------------------------------------------------------------------------- public API


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value parsed as a YAML scalar or flow list/mapping)."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ValueError(f"bad --set {text!r}: expected key.path=value, e.g. train.steps=500")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"bad --set {text!r}: value is not valid YAML ({e.problem})") from e
    return path, value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the raw (unvalidated) mapping with each ``a.b=value`` override set."""
    out = yaml.load(yaml.safe_dump(dict(raw)), Loader=_Loader)  # a deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ValueError(f"bad --set {text!r}: '{where}' is {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return out


def from_dict(raw: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """A validated ``Config`` from plain data (as parsed from YAML), after ``overrides``."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    return validate(_build(Config, apply_overrides(raw, overrides), ""))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Parse the YAML file at ``path``, apply ``a.b=value`` overrides and validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read config {str(path)!r}: {e.strerror}") from e
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"config {str(path)!r} is not valid YAML: {e}") from e
    return from_dict({} if raw is None else raw, overrides)


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) for saving: ``from_dict(to_dict(c)) == c``."""
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
