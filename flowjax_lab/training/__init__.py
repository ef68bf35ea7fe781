"""Training: ``fit`` over one parsed ``Objective``, a pure ``train_step``, the chunked loop.

``fl.fit``, ``fl.default_optimizer``, ``fl.FitResult`` and ``fl.TrainingDivergedError`` are
re-exported at the top level. Modules: ``objective`` (the spec), ``checks`` (input checks),
``losses`` (terms, batch maps, validation), ``step`` (``train_step``, the compiled chunk),
``feed`` (each step's rows), ``loop`` (the host loop, checkpoints), ``fitting`` (``fit``).
"""

from flowjax_lab.training.fitting import FitResult, default_optimizer, fit
from flowjax_lab.training.loop import TrainingDivergedError
from flowjax_lab.training.losses import Batch, chain_batch_maps
from flowjax_lab.training.objective import (
    FLOW_TERMS,
    TERMS,
    VAE_TERMS,
    Objective,
    parse_objective,
)
from flowjax_lab.training.step import StepInfo, StepSetup, TrainState, make_step, train_step

__all__ = [
    "FLOW_TERMS",
    "TERMS",
    "VAE_TERMS",
    "Batch",
    "FitResult",
    "Objective",
    "StepInfo",
    "StepSetup",
    "TrainState",
    "TrainingDivergedError",
    "chain_batch_maps",
    "default_optimizer",
    "fit",
    "make_step",
    "parse_objective",
    "train_step",
]
