"""Images for image flows: integer-pixel checks, uniform dequantisation, digits as 8x8x1 images.

Image events are (H, W, C) arrays. Integer pixels p in {0, ..., L-1} are dequantised once,

  x = (p + u) / L,  u ~ U[0, 1)^D      (D = H W C),

and a model of x reports nll_x (nats per image); on the integer-pixel scale

  bits/dim = (nll_x + D log L) / (D log 2)  = ``bits_per_dim(nll_x, D, num_levels=L)``,

the usual upper bound on -log2 P(p) / D (Theis et al. 2016).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import sklearn.datasets

from flowjax_lab.data.digits import DIGITS_NUM_LEVELS
from flowjax_lab.data.splits import train_val_test_split
from flowjax_lab.objectives import uniform_dequantize_pixels

DIGITS_IMAGE_SHAPE = (8, 8, 1)


def check_pixels(pixels, num_levels: int, name: str = "pixels") -> np.ndarray:
    """``pixels`` as a numpy array, after checking they are integers in [0, num_levels).

    Raises:
      ValueError: non-integer values, or values outside [0, num_levels), naming the first bad
        value, where it is and the allowed range.
    """
    p = np.asarray(pixels)
    if p.size == 0:
        raise ValueError(f"{name}: empty array of shape {p.shape}")
    flat = p.reshape(-1)
    bad = ~np.isfinite(flat) | (flat < 0) | (flat >= num_levels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}: value {flat[i].item()!r} at flat index {i} is outside [0, {num_levels}): pixel "
            f"values must be integers in [0, {num_levels}) ({num_levels} levels)"
        )
    if not np.issubdtype(p.dtype, np.integer) and not np.array_equal(flat, np.floor(flat)):
        i = int(np.flatnonzero(flat != np.floor(flat))[0])
        raise ValueError(
            f"{name}: value {flat[i].item()!r} at flat index {i} is not an integer: pixel values must "
            f"be integers in [0, {num_levels})"
        )
    return p


def check_image_shape(x, shape: tuple[int, ...], name: str = "images") -> None:
    """ValueError unless ``x`` has shape (n, *shape), naming both shapes."""
    x_shape = tuple(np.shape(x))
    if len(x_shape) != len(shape) + 1 or x_shape[1:] != tuple(shape):
        raise ValueError(
            f"{name}: expected images of shape (n, {', '.join(map(str, shape))}), got {x_shape}"
        )


def dequantize_images(key: jax.Array, pixels, num_levels: int) -> np.ndarray:
    """x = (p + u) / num_levels, u ~ U[0, 1) from ``key``, for integer pixels p; float32 numpy.

    Raises:
      ValueError: pixel values outside [0, num_levels) or not integers (``check_pixels``).
    """
    p = check_pixels(pixels, num_levels)
    return np.asarray(uniform_dequantize_pixels(key, jnp.asarray(p, jnp.float32), num_levels))


class ImageSplits(NamedTuple):
    """Integer pixels split into train / val / test, each (n, H, W, C), and their level count."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    num_levels: int


def load_digits_images(
    key: jax.Array, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> ImageSplits:
    """sklearn's 1797 8x8 digits as uint8 images (n, 8, 8, 1), pixels 0..16, shuffled and split.

    The small image case for tests: 17 levels, so bits/dim uses ``num_levels=17``.
    """
    pixels = sklearn.datasets.load_digits().data.astype(np.uint8).reshape(-1, *DIGITS_IMAGE_SHAPE)
    train, val, test = train_val_test_split(key, pixels, fractions)
    return ImageSplits(*(np.asarray(a) for a in (train, val, test)), DIGITS_NUM_LEVELS)
