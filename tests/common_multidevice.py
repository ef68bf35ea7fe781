"""The small problem that the multi-device and multi-process tests fit (one definition)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax_lab as fl

T = fl.transforms


def problem():
    """(flow, params, data): a 2-layer linear flow and 1000 correlated 2-D Gaussian rows."""
    layer = fl.chain(T.lu_linear(), T.affine(), T.random_permutation())
    flow = fl.make_flow(fl.stack(layer, 2), event_shape=(2,))
    data = jax.random.normal(jax.random.key(1), (1000, 2)) @ jnp.array([[1.0, 0.8], [0.0, 0.6]])
    return flow, flow.init(jax.random.key(0)), np.asarray(data) + 1.0


def fit_kwargs(data) -> dict:
    """40 MLE steps of 128 rows, validation and checkpoints every 20."""
    return dict(
        data=data[:900],
        val_data=data[900:],
        steps=40,
        batch_size=128,
        val_every=20,
        checkpoint_every=20,
        optimizer=optax.adam(1e-2),
        progress=False,
    )
