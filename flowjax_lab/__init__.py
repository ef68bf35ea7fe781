"""flowjax_lab: normalizing flows as pure JAX functions.

``apply`` is f (data -> noise), ``inverse`` is g = f^-1 (noise -> data); both take one event
and return (output, log|det J|). Compose with ``chain``/``stack``, add a base with ``make_flow``.
"""

from flowjax_lab import (
    bases,
    convolution,
    data,
    dequantization,
    distributed,
    interop,
    models,
    objectives,
    sharding,
    targets,
    testing,
    training,
    transforms,
    vae,
)
from flowjax_lab.checkpoint import Checkpointer, CheckpointError
from flowjax_lab.core import (
    Transform,
    as_key,
    chain,
    combine,
    invert,
    is_trainable,
    partition,
    stack,
)
from flowjax_lab.flow import (
    Flow,
    TrainableBase,
    base_distribution,
    data_init,
    make_flow,
    sample_at_temperature,
    standard_normal,
)
from flowjax_lab.interop import from_distrax, to_distrax
from flowjax_lab.objectives import (
    bits_per_dim,
    elbo,
    ess,
    forward_kl,
    importance_diagnostics,
    iwae_bound,
    iwae_from_log_weights,
    latent_log_weights,
    log_importance_weights,
    log_z_estimate,
    mean_log_weight,
    mixed_kl,
    reverse_kl,
)
from flowjax_lab.training import FitResult, TrainingDivergedError, default_optimizer, fit

__version__ = "0.1.0"

__all__ = [
    "Flow",
    "TrainableBase",
    "Transform",
    "as_key",
    "base_distribution",
    "bases",
    "chain",
    "combine",
    "convolution",
    "data",
    "data_init",
    "dequantization",
    "distributed",
    "forward_kl",
    "fit",
    "FitResult",
    "TrainingDivergedError",
    "default_optimizer",
    "Checkpointer",
    "CheckpointError",
    "bits_per_dim",
    "elbo",
    "ess",
    "importance_diagnostics",
    "iwae_bound",
    "iwae_from_log_weights",
    "latent_log_weights",
    "log_importance_weights",
    "log_z_estimate",
    "mean_log_weight",
    "mixed_kl",
    "from_distrax",
    "interop",
    "invert",
    "is_trainable",
    "make_flow",
    "models",
    "objectives",
    "partition",
    "reverse_kl",
    "sharding",
    "sample_at_temperature",
    "stack",
    "standard_normal",
    "targets",
    "testing",
    "to_distrax",
    "training",
    "transforms",
    "vae",
]
