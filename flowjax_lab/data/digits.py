"""The UCI 8x8 digits (scikit-learn, no download), dequantised and logit-transformed.

Preprocessing of a pixel vector p in {0, ..., 16}^64 (D = 64, L = 17 levels):

  x = (p + u) / L,                 u ~ U[0, 1)^D       (uniform dequantisation, x in [0, 1))
  y = logit(a + (1 - 2a) x)                            (RealNVP logit with alpha = a)
  log|det dy/dx| = sum_i [log(1 - 2a) - log s_i - log(1 - s_i)],  s = a + (1 - 2a) x
                 = sum_i [log(1 - 2a) + softplus(y_i) + softplus(-y_i)]   (`logit_logdet(y, a)`)

A model trained on y reports nll_y (nats per example). Converting it back:

  nll_x = nll_y - logit_logdet(y, a)                   (density of x on [0, 1)^D)
  nll_p = nll_x + D log L                              (density of p + u on [0, L)^D)
  bits/dim = nll_p / (D log 2)    = fl.bits_per_dim(nll_y, D, logit_logdet(y, a), num_levels=L)

nll_p is the usual upper bound on the discrete -log P(p) (Theis et al. 2016).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import sklearn.datasets

from flowjax_lab.core import as_key
from flowjax_lab.data.splits import train_val_test_split
from flowjax_lab.objectives import uniform_dequantize_pixels

DIGITS_DIM = 64
DIGITS_NUM_LEVELS = 17


class DigitsData(NamedTuple):
    """Digits split into train/val/test, each (n, 64) float32.

    Attributes:
      train, val, test: preprocessed rows: y = logit(...) if `alpha` is not None, else x in [0, 1).
      alpha: the logit alpha used, or None if no logit transform was applied.
      num_levels: number of pixel levels L (17); x = (p + u) / L.
    """

    train: jax.Array
    val: jax.Array
    test: jax.Array
    alpha: float | None
    num_levels: int


def logit_transform(x: jax.Array, alpha: float) -> jax.Array:
    """y = logit(alpha + (1 - 2 alpha) x), elementwise; maps [0, 1) into R."""
    s = alpha + (1.0 - 2.0 * alpha) * x
    return jnp.log(s) - jnp.log1p(-s)


def inverse_logit_transform(y: jax.Array, alpha: float) -> jax.Array:
    """x = (sigmoid(y) - alpha) / (1 - 2 alpha), the inverse of `logit_transform`."""
    return (jax.nn.sigmoid(y) - alpha) / (1.0 - 2.0 * alpha)


def logit_logdet(y: jax.Array, alpha: float) -> jax.Array:
    """log|det dy/dx| of `logit_transform`, summed over the last axis, computed from y.

    With s = sigmoid(y): dy_i/dx_i = (1 - 2 alpha) / (s_i (1 - s_i)), and
    -log s = softplus(-y), -log(1 - s) = softplus(y), so
    log|det| = sum_i [log(1 - 2 alpha) + softplus(y_i) + softplus(-y_i)]. Shape (...,).
    """
    per_dim = math.log(1.0 - 2.0 * alpha) + jax.nn.softplus(y) + jax.nn.softplus(-y)
    return jnp.sum(per_dim, axis=-1)


def load_digits(
    key: jax.Array,
    alpha: float | None = 0.05,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> DigitsData:
    """Loads sklearn's 1797 8x8 digits, dequantises, optionally logit-transforms, and splits.

    The dequantisation noise is drawn once from `key` (re-draw per epoch with `dequantize` on
    raw pixels if wanted). See the module docstring for converting NLLs to bits/dim.

    Args:
      key: jax random key (split into a shuffling key and a noise key).
      alpha: logit alpha (0.05 as in RealNVP, or e.g. 1e-6); None returns x in [0, 1).
      fractions: (train, val, test) fractions, see `train_val_test_split`.

    Returns:
      `DigitsData(train, val, test, alpha, num_levels=17)`, rows of shape (64,), float32.

    Example:
      >>> data = load_digits(jax.random.key(0))
      >>> data.train.shape
      (1437, 64)
    """
    if alpha is not None and not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5) or None, got {alpha}")
    pixels = np.asarray(sklearn.datasets.load_digits().data, np.float32)  # (1797, 64), 0..16
    key_split, key_noise = jax.random.split(as_key(key))
    x = uniform_dequantize_pixels(key_noise, jnp.asarray(pixels), DIGITS_NUM_LEVELS)
    if alpha is not None:
        x = logit_transform(x, alpha)
    train, val, test = train_val_test_split(key_split, x, fractions)
    return DigitsData(train, val, test, alpha, DIGITS_NUM_LEVELS)
