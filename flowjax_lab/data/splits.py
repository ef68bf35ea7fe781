"""Shuffled train/val/test splits and per-feature standardisation with its log-determinant."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flowjax_lab.core import as_key


class DataSplit(NamedTuple):
    """Disjoint train / validation / test rows of one data set."""

    train: jax.Array
    val: jax.Array
    test: jax.Array


class Standardizer(NamedTuple):
    """Per-feature affine map z = (x - mean) / std; both fields have shape (d,)."""

    mean: jax.Array
    std: jax.Array


def train_val_test_split(
    key: jax.Array, x: jax.Array, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> DataSplit:
    """Shuffles the rows of `x` with `key` and cuts them into train / val / test.

    Sizes: n_train = floor(f_train n), n_val = floor(f_val n), n_test = the rest, so every row
    lands in exactly one part.

    Args:
      key: jax random key for the permutation.
      x: (n, ...) array.
      fractions: non-negative (train, val, test) fractions summing to 1.

    Returns:
      `DataSplit(train, val, test)` of jax arrays.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    x = jnp.asarray(x)
    n = x.shape[0]
    n_train = math.floor(fractions[0] * n)
    n_val = math.floor(fractions[1] * n)
    shuffled = x[jax.random.permutation(as_key(key), n)]
    return DataSplit(
        shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]
    )


def fit_standardizer(x: jax.Array, min_std: float = 1e-6) -> Standardizer:
    """Per-feature mean and standard deviation of the rows of `x` (n, d).

    Features with std <= min_std (e.g. constant pixels) get std = 1, so they are only centred.
    """
    x = jnp.asarray(x)
    std = jnp.std(x, axis=0)
    return Standardizer(jnp.mean(x, axis=0), jnp.where(std > min_std, std, jnp.ones_like(std)))


def standardize(standardizer: Standardizer, x: jax.Array) -> jax.Array:
    """z = (x - mean) / std, for x of shape (..., d)."""
    return (x - standardizer.mean) / standardizer.std


def unstandardize(standardizer: Standardizer, z: jax.Array) -> jax.Array:
    """x = z * std + mean, the inverse of `standardize`."""
    return z * standardizer.std + standardizer.mean


def standardize_logdet(standardizer: Standardizer) -> jax.Array:
    """log|det dz/dx| = -sum_i log std_i of `standardize` (constant in x).

    A model fitted to standardised data reports NLL_std; in data units
    NLL_data = NLL_std - standardize_logdet(s).
    """
    return -jnp.sum(jnp.log(standardizer.std))
