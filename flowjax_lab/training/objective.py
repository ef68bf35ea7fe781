"""The objective spec, parsed once: a user's objective -> one typed ``Objective``.

``fl.fit``, the experiment config and the CLI all call `parse_objective`; every error about an
objective is raised here, naming the offending value and the allowed ones.

Accepted specs (one stage, or a schedule of stages):
  - a term name: "mle", "reverse_kl", "reverse_kl_stl" (stick the landing), "elbo";
    "rnode" (Finlay et al. 2020: mean over the batch of int ||v||^2 dt + int ||dv/dz||_F^2 dt
    along each row's path, for ``fl.models.cnf``; weight it beside "mle");
  - a dict of weights {"mle": 1.0, "reverse_kl": 0.5}; for the VAE bounds {"iwae": k} and
    {"iwae_dreg": k} the value is the number of importance samples k (the weight is 1);
  - a schedule [(start_step, spec), ...] (or, as YAML gives it, [{start: s, objective: spec}]),
    starting at step 0 with increasing starts; one k per IWAE term across the schedule.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

FLOW_TERMS = ("mle", "reverse_kl", "reverse_kl_stl", "rnode")
"""Flow terms: forward KL on data, reverse KL on base samples (``_stl``: stick the landing), and
RNODE's penalty on the data's paths (a continuous flow, ``fl.models.cnf``, only)."""

VAE_TERMS = ("elbo", "iwae", "iwae_dreg")
"""Latent-variable terms of a ``fl.vae.VAE`` on data: minus the ELBO, minus IWAE-k (plain or
DReG gradient)."""

TERMS = (*FLOW_TERMS, *VAE_TERMS)
"""Every objective term, in the order of an ``Objective``'s weight rows."""

SAMPLE_TERMS = ("iwae", "iwae_dreg")
"""Terms whose dict value is the number of importance samples k, not a weight."""

DATA_TERMS = ("mle", "rnode", *VAE_TERMS)
TARGET_TERMS = ("reverse_kl", "reverse_kl_stl")


class Objective(NamedTuple):
    """A parsed objective: which terms, with which weights, from which step.

    Attributes:
      starts: the first step of each stage, (0, ...) increasing.
      weights: one row of len(TERMS) weights per stage (term order: ``TERMS``).
      samples: {term: k} for the IWAE terms.
      spec: the objective as plain data (a name, a dict, or a list of {start, objective}), for
        saving in a config (``parse_objective(spec)`` gives this value back).
    """

    starts: tuple[int, ...]
    weights: tuple[tuple[float, ...], ...]
    samples: dict
    spec: Any

    @property
    def used(self) -> tuple[str, ...]:
        """The terms with a non-zero weight in some stage, in ``TERMS`` order."""
        return tuple(t for i, t in enumerate(TERMS) if any(row[i] for row in self.weights))

    @property
    def always(self) -> tuple[str, ...]:
        """The terms with a non-zero weight in every stage."""
        return tuple(t for i, t in enumerate(TERMS) if all(row[i] for row in self.weights))

    @property
    def is_vae(self) -> bool:
        return bool(self.used) and all(t in VAE_TERMS for t in self.used)

    @property
    def needs_data(self) -> tuple[str, ...]:
        return tuple(t for t in self.used if t in DATA_TERMS)

    @property
    def needs_target(self) -> bool:
        return any(t in TARGET_TERMS for t in self.used)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts (S,) int32, weights (S, len(TERMS)) float32), for the compiled step."""
        return np.asarray(self.starts, np.int32), np.asarray(self.weights, np.float32)


def _bad(where: tuple[str, str], message: str) -> ValueError:
    prefix, path = where
    return ValueError(f"{prefix}'{path}': {message}")


def _at(where: tuple[str, str], sub: str) -> tuple[str, str]:
    return where[0], where[1] + sub


def _stages(objective: Any, where: tuple[str, str]) -> list[tuple[int, Any, str]]:
    """[(start, stage spec, where)] of a spec, the schedule's structure checked."""
    if isinstance(objective, (str, Mapping)):
        return [(0, objective, where)]
    if not isinstance(objective, (list, tuple)) or not objective:
        raise _bad(
            where,
            f"unknown objective {objective!r}: give one of {list(TERMS)}, a dict of weights or "
            "a schedule [(start_step, objective), ...]",
        )
    out = []
    for i, item in enumerate(objective):
        here = _at(where, f"[{i}]")
        if isinstance(item, Mapping) and set(item) == {"start", "objective"}:
            item = (item["start"], item["objective"])
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise _bad(here, f"a schedule entry is (start_step, objective), got {item!r}")
        start = item[0]
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
            raise _bad(here, f"the start step must be an integer, got {start!r}")
        out.append((int(start), item[1], _at(here, ".objective")))
    starts = [s for s, _, _ in out]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise _bad(where, f"a schedule needs increasing starts beginning at 0, got {starts}")
    return out


def _stage_row(spec: Any, where: tuple[str, str], samples: dict) -> tuple[float, ...]:
    """One stage's weights over ``TERMS``; IWAE sample counts go to ``samples``."""
    if isinstance(spec, str):
        if spec in SAMPLE_TERMS:
            raise _bad(where, f"{spec!r} needs its number of importance samples: give {{{spec!r}: k}}")
        spec = {spec: 1.0}
    if not isinstance(spec, Mapping) or not spec:
        raise _bad(where, f"expected an objective name or a dict of weights, got {spec!r}")
    row = dict.fromkeys(TERMS, 0.0)
    for name, value in spec.items():
        if name not in TERMS:
            raise _bad(where, f"unknown objective {name!r}; allowed: {list(TERMS)}")
        if name in SAMPLE_TERMS:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise _bad(
                    _at(where, f".{name}"),
                    "the value is the number of importance samples k, an integer >= 1, "
                    f"got {value!r}",
                )
            if samples.setdefault(name, int(value)) != int(value):
                raise _bad(
                    _at(where, f".{name}"),
                    f"k = {value} differs from k = {samples[name]} elsewhere in the schedule "
                    "(one k per term)",
                )
            value = 1.0
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _bad(_at(where, f".{name}"), f"a weight is a number >= 0, got {value!r}")
        elif not np.isfinite(value) or value < 0:
            raise _bad(_at(where, f".{name}"), f"a weight is a number >= 0, got {value!r}")
        row[name] = float(value)
    if not any(row.values()):
        raise _bad(where, f"all weights are zero in {dict(spec)!r}")
    kinds = {t in VAE_TERMS for t, w in row.items() if w}
    if len(kinds) > 1:
        raise _bad(where, f"{dict(spec)!r} mixes flow terms {list(FLOW_TERMS)} and VAE terms "
                   f"{list(VAE_TERMS)}")  # fmt: skip
    return tuple(row.values())


def _plain(spec: Any) -> Any:
    """A stage spec as plain YAML-able data: a name, or a dict of numbers."""
    if isinstance(spec, str):
        return spec
    return {k: int(v) if k in SAMPLE_TERMS else float(v) for k, v in spec.items()}


def parse_objective(objective: Any, where: str = "objective", prefix: str = "") -> Objective:
    """``objective`` (see the module docstring) as an ``Objective``.

    Errors read ``{prefix}'{where}[.sub path]': ...``, e.g. ``'objective.iwae': ...`` (the
    config passes prefix "config key ").

    Raises:
      ValueError: an unknown term, a bad weight or k, a schedule out of order, a stage that
        mixes flow and VAE terms, or a schedule that does; naming the value and the allowed ones.

    Example:
      >>> parse_objective([(0, "mle"), (500, {"mle": 1.0, "reverse_kl": 0.5})]).used
      ('mle', 'reverse_kl')
    """
    if isinstance(objective, Objective):
        return objective
    samples: dict[str, int] = {}
    where = (prefix, where)
    stages = _stages(objective, where)
    rows = tuple(_stage_row(spec, here, samples) for _, spec, here in stages)
    parsed = Objective(
        starts=tuple(s for s, _, _ in stages),
        weights=rows,
        samples=samples,
        spec=_plain(stages[0][1])
        if isinstance(objective, (str, Mapping))
        else [{"start": s, "objective": _plain(spec)} for s, spec, _ in stages],
    )
    if len({t in VAE_TERMS for t in parsed.used}) > 1:
        raise _bad(where, f"the schedule mixes flow and VAE terms: {list(parsed.used)}")
    return parsed


def check_model_kind(objective: Objective, is_vae: bool, model: str, prefix: str = ""):
    """ValueError unless a VAE gets VAE terms and a flow gets flow terms (one message)."""
    if objective.is_vae != is_vae:
        raise _bad(
            (prefix, "objective"),
            f"a VAE trains with {list(VAE_TERMS)} (as 'elbo', {{iwae: k}}, {{iwae_dreg: k}}) "
            f"only, a flow with {list(FLOW_TERMS)}; got {list(objective.used)} for {model}",
        )


__all__ = [
    "FLOW_TERMS",
    "SAMPLE_TERMS",
    "TERMS",
    "VAE_TERMS",
    "Objective",
    "check_model_kind",
    "parse_objective",
]
