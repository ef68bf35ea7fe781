"""The VAE terms of ``fl.fit``: training losses, the validation bound and the data checks.

``fit`` adds these to its loss-term table when the model is a `VAE`: "elbo" (weight w: w x the
negative ELBO), {"iwae": k} and {"iwae_dreg": k} (the negative IWAE-k bound with the plain or
DReG gradient; the value is k, the weight is 1). Step s gets key fold_in(step_key, s), split
into a binarisation key and a sample key, so a resumed run repeats every draw.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.vae.model import VAE

BINARIZE = (None, "dynamic")
"""Training-data binarisation: None (use the rows as given) or "dynamic" (each step draws
x ~ Bernoulli(rows), the rows being pixel intensities in [0, 1]; Salakhutdinov & Murray 2008)."""

VALIDATION_SAMPLES = 8192  # importance samples per validation batch (rows x k), bounds memory


def binarize_dynamic(key, x: jax.Array) -> jax.Array:
    """x ~ Bernoulli(intensities), elementwise, in the dtype of ``x``."""
    return (jax.random.uniform(key, x.shape, x.dtype) < x).astype(x.dtype)


def vae_term_losses(model: VAE, samples: dict, binarize: str | None) -> dict:
    """{term: loss(params, x, ctx, key) -> scalar} for "elbo", "iwae", "iwae_dreg"."""

    def term(bound: Callable) -> Callable:
        def loss(p, x, c, key):
            del c
            k_bin, k_z = jax.random.split(key)
            if binarize == "dynamic":
                x = binarize_dynamic(k_bin, x)
            return -jnp.mean(bound(p, x, k_z))

        return loss

    return {
        "elbo": term(model.elbo),
        "iwae": term(lambda p, x, k: model.iwae(p, x, k, samples.get("iwae", 1))),
        "iwae_dreg": term(lambda p, x, k: model.iwae(p, x, k, samples.get("iwae_dreg", 1), "dreg")),
    }


def validation_bound(model: VAE, samples: dict, key) -> Callable:
    """``loss(params, x, ctx) -> scalar``: minus the mean validation bound, at a fixed key.

    The bound is the objective's: IWAE-k with the largest k among its IWAE terms, else the
    ELBO. The rows run in batches of max(1, 8192 // k) under ``lax.map`` (memory bounded);
    batch b uses fold_in(key, b), the same at every validation, so changes are the params'.
    """
    k = max(samples.values(), default=0)

    def bound(p, x, kb):
        return model.iwae(p, x, kb, k) if k else model.elbo(p, x, kb)

    def loss(p, x, c):
        del c
        n = x.shape[0]
        b = max(1, min(n, VALIDATION_SAMPLES // max(k, 1)))
        m = -(-n // b)
        if m * b > n:
            x = jnp.concatenate([x, jnp.repeat(x[:1], m * b - n, axis=0)])
        xs = x.reshape(m, b, *x.shape[1:])
        values = jax.lax.map(
            lambda a: bound(p, a[0], jax.random.fold_in(key, a[1])), (xs, jnp.arange(m))
        )
        return -jnp.mean(values.reshape(-1)[:n])

    return loss


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


__all__ = [
    "BINARIZE",
    "binarize_dynamic",
    "check_vae_inputs",
    "validation_bound",
    "vae_term_losses",
]
