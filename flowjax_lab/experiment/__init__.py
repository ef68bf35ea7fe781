"""Experiments from YAML configs: the typed schema, what a config builds, the run folder, one
``run(config)`` for flows and VAEs, and the ``flowjax-lab`` command line.

Modules: ``typed`` (YAML and dataclass checking), ``config`` (the schema), ``build`` (config ->
model, data/target problem, optimizer), ``folder`` (run folder, keys, metrics), ``evaluation``
(chunked evaluation), ``flows`` / ``vaes`` (the per-kind pieces), ``pipeline`` (``run``,
``evaluate``, ``sample``, ``load_run``), ``plots``, ``cli``.
"""

from flowjax_lab.experiment import flows, vaes
from flowjax_lab.experiment.config import Config, from_dict, load_config
from flowjax_lab.experiment.folder import RunResult, run_keys
from flowjax_lab.experiment.pipeline import KINDS, Kind, evaluate, load_run, run, sample

__all__ = [
    "KINDS",
    "Config",
    "Kind",
    "RunResult",
    "evaluate",
    "flows",
    "from_dict",
    "load_config",
    "load_run",
    "run",
    "run_keys",
    "sample",
    "vaes",
]
