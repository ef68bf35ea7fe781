"""``fit``'s input checks, all raised before any compile: sizes, data, context, target, VAE data.

Each check takes only the arguments it judges; `check_data_inputs` returns the host arrays the
data feed and validation need (``FitData``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from flowjax_lab.checks import positive_int
from flowjax_lab.core import partition
from flowjax_lab.flow import Flow
from flowjax_lab.sharding import as_mesh, check_divisible
from flowjax_lab.training.objective import Objective, check_model_kind
from flowjax_lab.vae.model import VAE

BINARIZE = (None, "dynamic")
"""Training-data binarisation of a VAE: None (the rows as given) or "dynamic" (each step draws
x ~ Bernoulli(rows), the rows being pixel intensities in [0, 1]; Salakhutdinov & Murray 2008)."""


class FitData(NamedTuple):
    """``fit``'s data checked: host arrays, the per-step batch and the mesh."""

    data: np.ndarray | None  # (n, *event) training rows (integer pixels kept as floats)
    ctx_rows: np.ndarray | None  # (n, c) per-row context
    ctx_one: jax.Array | None  # (c,) one context for every event
    val: tuple | None  # (x, context) host arrays
    target_log_prob: Callable | None
    batch: int
    mesh: Mesh | None


def param_dtype(tree):
    """The dtype of a pytree's first leaf (float32 / float64 default when it has none)."""
    leaves = jax.tree.leaves(tree)
    return leaves[0].dtype if leaves else jnp.zeros(()).dtype


def check_rows(x, event_shape, name: str, dtype, integers: bool = False) -> np.ndarray:
    """(n, *event_shape) finite rows as a numpy array of ``dtype``, else a ValueError.

    ``integers``: integer dtypes are accepted too (pixel values, cast to ``dtype``).
    """
    x = np.asarray(x)
    if x.ndim != 1 + len(event_shape) or tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name}: dimension mismatch: the flow's events have shape {tuple(event_shape)}, so "
            f"{name} should be (n, *{tuple(event_shape)}), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: has no rows")
    if not (np.issubdtype(x.dtype, np.floating) or integers and np.issubdtype(x.dtype, np.integer)):
        kind = "floating-point or integer pixel" if integers else "floating-point"
        raise ValueError(f"{name}: expected {kind} data, got dtype {x.dtype}")
    bad = ~np.isfinite(x).reshape(x.shape[0], -1)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name}: {int(bad.sum())} NaN/inf values in {rows.size} rows; the first is row "
            f"{int(rows[0])}"
        )
    return np.asarray(x, dtype)


def check_pixel_rows(data: np.ndarray, levels: int) -> None:
    """``fit(dequantize=L)``'s data must be integer pixel values in [0, L)."""
    lo, hi = float(data.min()), float(data.max())
    integers = bool(np.all(data == np.floor(data)))
    if not (0 <= lo and hi < levels and integers):
        raise ValueError(
            f"dequantize={levels} needs data of integer pixel values in [0, {levels}); got "
            f"values in [{lo}, {hi}]" + ("" if integers else ", not all integers (dequantised?)")
        )


def check_target(flow: Flow, params, target_log_prob: Callable, key, context, n: int = 256):
    """ValueError unless ``target_log_prob`` maps events to scalars, finite somewhere on q."""
    x = flow.sample(params, jax.random.fold_in(key, 0x7FFFFFFF), n, context)
    try:
        lp = jax.vmap(target_log_prob)(x)
    except Exception as err:
        raise ValueError(f"target_log_prob failed on events of shape {x.shape[1:]}: {err}") from err
    if lp.shape != (n,):
        raise ValueError(
            f"target_log_prob must map one event to a scalar, got shape {lp.shape[1:]}"
        )
    if not np.isfinite(np.asarray(lp)).any():
        raise ValueError(
            f"target_log_prob is NaN/inf for all {n} samples of the initial flow: check its "
            "support and the flow's event shape"
        )


def check_loop_args(*, steps, batch_size, steps_per_chunk, val_every, checkpoint_every, keep,
                    patience, val_data, resume, checkpoint_dir) -> None:  # fmt: skip
    """The loop's sizes are positive integers; early stopping and resuming have what they need."""
    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("steps_per_chunk", steps_per_chunk),
        ("val_every", val_every),
        ("checkpoint_every", checkpoint_every),
        ("keep", keep),
    ):
        positive_int(value, name)
    if patience is not None and val_data is None:
        raise ValueError("patience= (early stopping) needs val_data=")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")


def check_batch_maps(flow, objective: Objective, *, binarize, dequantize, preprocess) -> None:
    """The batch-map keywords suit the model and the objective."""
    is_vae = isinstance(flow, VAE)
    if binarize is not None and not is_vae:
        raise ValueError(f"binarize={binarize!r} is for a VAE with a Bernoulli likelihood")
    if dequantize is not None:
        if is_vae or "mle" not in objective.used:
            raise ValueError(f"dequantize={dequantize!r} is for a flow trained by 'mle' on pixels")
        positive_int(dequantize, "dequantize")
    if preprocess is not None and (dequantize is None or not callable(preprocess)):
        raise ValueError(
            f"preprocess={preprocess!r}: a function applied to each step's dequantised batch; "
            "it needs dequantize=L (data given in model units need no preprocess)"
        )


def check_vae_inputs(model: VAE, data, val_x, binarize, context) -> None:
    """ValueErrors for VAE training input: binarize, context, intensities, binary val rows."""
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {list(BINARIZE)}, got {binarize!r}")
    if binarize is not None and model.likelihood != "bernoulli":
        raise ValueError(
            f"binarize={binarize!r} needs a Bernoulli likelihood, the model's is {model.likelihood!r}"
        )
    if context is not None:
        raise ValueError("a VAE takes no context= (condition through the data instead)")
    if data is not None:
        if binarize == "dynamic":
            lo, hi = float(np.min(data)), float(np.max(data))
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"data: binarize='dynamic' needs intensities in [0, 1], got values in [{lo}, {hi}]"
                )
        else:
            model.check_data(data, "data")
    if val_x is not None:
        model.check_data(val_x, "val_data")


def _split_val(val_data):
    return val_data if isinstance(val_data, (tuple, list)) else (val_data, None)


def check_data_inputs(flow, params, key, objective: Objective, *, data, target_log_prob, context,
                      val_data, batch_size, mesh, binarize, dequantize) -> FitData:  # fmt: skip
    """Data, context, validation rows and target checked against the model and the objective."""
    is_vae = isinstance(flow, VAE)
    check_model_kind(objective, is_vae, f"a {type(flow).__name__}")
    for term in objective.needs_data:
        if data is None:
            raise ValueError(f"objective {objective.spec!r} uses {term!r}, which needs data=")
    if target_log_prob is not None and not callable(target_log_prob):
        target_log_prob = getattr(target_log_prob, "log_prob", target_log_prob)
    if objective.needs_target and not callable(target_log_prob):
        raise ValueError(
            f"objective {objective.spec!r} uses reverse KL, which needs target_log_prob="
        )
    dtype = param_dtype(partition(params)[0])
    shape = flow.data_shape if is_vae else flow.event_shape
    if is_vae:
        check_vae_inputs(flow, data, _split_val(val_data)[0], binarize, context)
    ctx_rows = ctx_one = val = None
    if context is not None:
        context = np.asarray(context)
        if context.ndim == 1:
            ctx_one = jnp.asarray(context, dtype)
        elif data is None or context.ndim != 2 or context.shape[0] != np.shape(data)[0]:
            raise ValueError(f"context: expected (c,) or one row per data row, got {context.shape}")
        elif objective.needs_target:
            raise ValueError("reverse KL needs one context vector (c,), not per-row context")
        else:
            ctx_rows = check_rows(context, context.shape[1:], "context", dtype)
    if data is not None:
        data = check_rows(data, shape, "data", dtype, integers=dequantize is not None)
        if dequantize is not None:
            check_pixel_rows(data, dequantize)
    if val_data is not None:
        val_x, val_ctx = _split_val(val_data)
        val_x = check_rows(val_x, shape, "val_data", dtype)
        val = (val_x, ctx_one if val_ctx is None else np.asarray(val_ctx, dtype))
    if objective.needs_target:
        check_target(flow, params, target_log_prob, key, ctx_one)
    batch = batch_size if data is None else min(batch_size, data.shape[0])
    mesh = as_mesh(mesh)
    if mesh is not None:
        check_divisible(batch, mesh, "batch_size" if batch == batch_size else "batch (data rows)")
    return FitData(data, ctx_rows, ctx_one, val, target_log_prob, batch, mesh)
