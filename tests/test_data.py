"""Tests for flowjax_lab.data: toy sets, mixtures, digits, splits, standardisation, checks."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import sklearn.datasets

from flowjax_lab import data

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(KEY)


def grid_integral(log_prob, lo: float, hi: float, n: int) -> float:
    """Midpoint-rule integral of exp(log_prob) over [lo, hi]^2; log_prob maps (..., 2) to (...)."""
    h = (hi - lo) / n
    axis = lo + h * (np.arange(n) + 0.5)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).astype(np.float32)
    log_p = log_prob(jnp.asarray(grid))
    return float(np.exp(np.asarray(log_p, np.float64)).sum() * h * h)


# --- keys ------------------------------------------------------------------------------------


def test_as_key_accepts_typed_and_legacy_keys():
    typed, legacy = jax.random.key(3), jax.random.PRNGKey(3)
    assert data.as_key(typed) is typed
    np.testing.assert_array_equal(
        jax.random.normal(data.as_key(legacy), (3,)), jax.random.normal(typed, (3,))
    )
    with pytest.raises(ValueError, match="float32"):
        data.as_key(jnp.zeros(2))


# --- 2-D toys --------------------------------------------------------------------------------


# Jitted once per module; every test samples n = 1000 so the compiled code is shared.
JITTED_TOY_2D = {name: jax.jit(fn, static_argnums=1) for name, fn in data.TOY_2D.items()}


@pytest.mark.parametrize("name", sorted(data.TOY_2D))
def test_toy_shape_dtype_range_and_determinism(name):
    sample = JITTED_TOY_2D[name]
    x = sample(KEY, 1000)
    assert x.shape == (1000, 2) and x.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x))) and float(jnp.max(jnp.abs(x))) < 6.0
    np.testing.assert_array_equal(x, sample(jax.random.key(0), 1000))
    assert not np.allclose(x, sample(jax.random.key(1), 1000))


def test_toy_sampler_accepts_legacy_keys_and_compiles_once():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def sample(key):
        return data.two_moons(key, 1000)

    x = sample(jax.random.PRNGKey(0))
    sample(jax.random.PRNGKey(1))
    np.testing.assert_allclose(x, JITTED_TOY_2D["two_moons"](KEY, 1000), atol=1e-6)


@pytest.mark.parametrize("name", sorted(data.TOY_2D_LOG_PROB))
def test_toy_log_prob_integrates_to_one_and_covers_samples(name):
    log_prob = jax.jit(data.TOY_2D_LOG_PROB[name])
    assert abs(grid_integral(log_prob, -5.0, 5.0, 500) - 1.0) < 1e-3
    assert bool(jnp.all(jnp.isfinite(log_prob(JITTED_TOY_2D[name](KEY, 1000)))))


def test_checkerboard_log_prob_values():
    x = jnp.array([[0.5, 0.5], [0.5, 2.5], [-3.5, -3.5], [4.5, 0.5]])
    expected = [-math.log(32.0), -np.inf, -math.log(32.0), -np.inf]
    np.testing.assert_allclose(jax.jit(data.checkerboard_log_prob)(x), expected, rtol=1e-6)


# --- Gaussian mixtures -----------------------------------------------------------------------
# Mixtures are built inside jit: one compilation instead of many eager ones, and it checks that
# the factory traces.


@pytest.mark.parametrize(
    "scales_or_covs",
    [
        0.4,
        [0.3, 0.5],
        [[0.3, 0.6], [0.5, 0.4]],
        [[[0.5, 0.3], [0.3, 0.4]], [[0.2, 0.0], [0.0, 0.6]]],
    ],
    ids=["scalar", "isotropic", "diagonal", "full"],
)
def test_mixture_integrates_to_one_in_2d(scales_or_covs):
    def log_prob(x):
        mixture = data.gaussian_mixture([[-1.5, 0.0], [1.5, 0.5]], scales_or_covs, [0.3, 0.7])
        return mixture.log_prob(x)

    assert abs(grid_integral(jax.jit(log_prob), -6.0, 6.0, 300) - 1.0) < 1e-3


def test_mixture_matches_scipy_in_3d_for_one_event_and_batches():
    means = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5]])
    covs = np.array([np.diag([1.0, 0.5, 2.0]), [[1.0, 0.3, 0.1], [0.3, 0.8, 0.2], [0.1, 0.2, 0.6]]])
    weights = np.array([0.25, 0.75])
    x = np.random.default_rng(0).normal(size=(4, 5, 3))

    @jax.jit
    def log_probs(batch, event):
        mixture = data.gaussian_mixture(means, covs, weights)
        return mixture.log_prob(batch), mixture.log_prob(event)

    batch_lp, event_lp = log_probs(x, x[0, 0])
    expected = np.log(
        sum(
            w * scipy.stats.multivariate_normal(m, c).pdf(x)
            for w, m, c in zip(weights, means, covs, strict=True)
        )
    )
    np.testing.assert_allclose(batch_lp, expected, rtol=1e-5, atol=1e-5)
    assert event_lp.shape == ()
    np.testing.assert_allclose(event_lp, expected[0, 0], rtol=1e-5)


def test_mixture_sample_shape_determinism_and_moments():
    @jax.jit
    def sample(key):
        means = [[-2.0, 0.0, 1.0], [2.0, 1.0, 0.0]]
        return data.gaussian_mixture(means, [0.5, 1.0], [0.25, 0.75]).sample(key, 20_000)

    x = sample(KEY)
    assert x.shape == (20_000, 3) and x.dtype == jnp.float32
    np.testing.assert_array_equal(x, sample(jax.random.key(0)))
    assert not np.allclose(x, sample(jax.random.key(1)))
    np.testing.assert_allclose(jnp.mean(x, 0), [1.0, 0.75, 0.25], atol=0.05)


def test_mixture_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        data.gaussian_mixture([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="weights must have shape"):
        data.gaussian_mixture([[0.0, 0.0], [1.0, 1.0]], 1.0, [1.0])
    with pytest.raises(ValueError, match="dimension 2"):
        jax.jit(lambda x: data.gaussian_mixture([[0.0, 0.0]], 1.0).log_prob(x))(jnp.zeros(3))


def test_correlated_gaussian_is_well_conditioned_and_entropy_matches_scipy():
    sample = jax.jit(data.correlated_gaussian, static_argnums=1)
    mean, cov = sample(KEY, 5)
    assert mean.shape == (5,) and cov.shape == (5, 5)
    np.testing.assert_allclose(cov, cov.T)
    eigs = np.linalg.eigvalsh(np.asarray(cov, np.float64))
    assert eigs.min() >= 0.5 - 1e-4 and eigs.max() <= 2.0 + 1e-4
    np.testing.assert_array_equal(cov, sample(jax.random.key(0), 5).cov)
    assert not np.allclose(cov, sample(jax.random.key(1), 5).cov)
    expected = scipy.stats.multivariate_normal(np.asarray(mean), np.asarray(cov)).entropy()
    np.testing.assert_allclose(jax.jit(data.gaussian_entropy)(cov), expected, rtol=1e-5)


# --- splits and standardisation --------------------------------------------------------------


def test_split_is_disjoint_complete_and_deterministic():
    split_fn = jax.jit(data.train_val_test_split, static_argnums=2)
    split = split_fn(KEY, jnp.arange(103), (0.8, 0.1, 0.1))
    assert [len(part) for part in split] == [82, 10, 11]
    merged = np.concatenate([np.asarray(part) for part in split])
    np.testing.assert_array_equal(np.sort(merged), np.arange(103))
    again = split_fn(jax.random.key(0), jnp.arange(103), (0.8, 0.1, 0.1))
    np.testing.assert_array_equal(split.train, again.train)
    other = split_fn(jax.random.key(1), jnp.arange(103), (0.8, 0.1, 0.1))
    assert not np.array_equal(split.train, other.train)


def test_split_keeps_rows_together_and_rejects_bad_fractions():
    x = jnp.arange(20.0).reshape(10, 2)
    split = jax.jit(data.train_val_test_split, static_argnums=2)(KEY, x, (0.5, 0.5, 0.0))
    assert split.train.shape == (5, 2) and split.test.shape == (0, 2)
    np.testing.assert_array_equal(split.train[:, 1] - split.train[:, 0], 1.0)
    with pytest.raises(ValueError, match="summing to 1"):
        data.train_val_test_split(KEY, x, (0.5, 0.2, 0.2))


def test_standardizer_round_trip_moments_and_constant_features():
    @jax.jit
    def round_trip(key):
        x = jax.random.normal(key, (500, 3)) * jnp.array([2.0, 0.5, 0.0]) + jnp.array([1, -3, 7])
        s = data.fit_standardizer(x)
        z = data.standardize(s, x)
        return x, s, z, data.unstandardize(s, z)

    x, s, z, x_again = round_trip(KEY)
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.std(z, 0), [1.0, 1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(x_again, x, atol=1e-5)
    assert float(s.std[2]) == 1.0


def test_standardize_logdet_converts_nll_to_data_units():
    s = data.Standardizer(mean=jnp.array([1.0, -2.0]), std=jnp.array([2.0, 0.25]))
    logdet = float(jax.jit(data.standardize_logdet)(s))
    np.testing.assert_allclose(logdet, -math.log(0.5), rtol=1e-6)
    jacobian = jax.jit(jax.jacobian(data.standardize, argnums=1))(s, jnp.zeros(2))
    np.testing.assert_allclose(logdet, np.linalg.slogdet(np.asarray(jacobian))[1], rtol=1e-6)
    x = np.array([0.3, -1.7])
    nll_std = -scipy.stats.norm.logpdf((x - np.asarray(s.mean)) / np.asarray(s.std)).sum()
    nll_data = -scipy.stats.norm.logpdf(x, s.mean, s.std).sum()
    np.testing.assert_allclose(nll_std - logdet, nll_data, rtol=1e-6)


# --- check_data ------------------------------------------------------------------------------


def test_check_data_accepts_good_data():
    data.check_data(np.zeros((4, 2), np.float32), dim=2)


@pytest.mark.parametrize(
    "x, dim, message",
    [
        (np.zeros(5), None, r"train: expected a rank-2 array \(n, d\), got rank 1"),
        (np.zeros((0, 2)), None, "train: has no rows"),
        (np.zeros((4, 2), np.int32), None, "train: expected a floating dtype, got dtype int32"),
        (np.zeros((4, 3)), 2, "train: dimension mismatch: expected d=2, got d=3"),
    ],
    ids=["rank", "empty", "dtype", "dim"],
)
def test_check_data_errors(x, dim, message):
    with pytest.raises(ValueError, match=message):
        data.check_data(x, dim=dim, name="train")


def test_check_data_reports_non_finite_count_and_first_row():
    x = np.zeros((6, 2))
    x[3, 1], x[5, 0], x[5, 1] = np.nan, np.inf, -np.inf
    with pytest.raises(
        ValueError, match=r"3 non-finite values .* 2 rows; first bad row is index 3"
    ):
        data.check_data(x)


# --- digits ----------------------------------------------------------------------------------


def test_load_digits_shapes_values_and_determinism(digits):
    assert [part.shape for part in digits[:3]] == [(1437, 64), (179, 64), (181, 64)]
    for part in digits[:3]:
        assert part.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(part)))
    bound = math.log(0.95 / 0.05)  # logit(1 - alpha)
    assert float(jnp.max(jnp.abs(digits.train))) <= bound + 1e-5
    np.testing.assert_array_equal(digits.val, data.load_digits(jax.random.PRNGKey(0)).val)
    assert not np.allclose(digits.val, data.load_digits(jax.random.key(1)).val)


def test_load_digits_without_logit_dequantises_the_pixels():
    digits = data.load_digits(KEY, alpha=None)
    x = np.concatenate([np.asarray(part) for part in digits[:3]])
    assert digits.alpha is None and x.min() >= 0.0 and x.max() < 1.0
    pixels = np.floor(x * digits.num_levels)
    assert pixels.sum() == sklearn.datasets.load_digits().data.sum()


def test_logit_transform_inverse_and_logdet():
    alpha = 0.05

    @jax.jit
    def transforms(x):
        y = data.logit_transform(x, alpha)
        jacobian = jax.jacobian(data.logit_transform)(x, alpha)
        return y, data.inverse_logit_transform(y, alpha), data.logit_logdet(y, alpha), jacobian

    x = jax.random.uniform(KEY, (64,))
    _, x_again, logdet, jacobian = transforms(x)
    np.testing.assert_allclose(x_again, x, atol=1e-5)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(np.asarray(jacobian))[1], rtol=1e-5)
    # By hand: at x = 1/2, s = 1/2 and dy/dx = (1 - 2 alpha) / (1/4) = 3.6 per pixel.
    _, _, logdet_half, _ = transforms(jnp.full((64,), 0.5))
    np.testing.assert_allclose(logdet_half, 64 * math.log(3.6), rtol=1e-6)


def test_bits_per_dim_by_hand(digits):
    np.testing.assert_allclose(data.bits_per_dim(100.0, 64, -20.0), 120.0 / (64 * math.log(2)))
    np.testing.assert_allclose(
        data.bits_per_dim(100.0, 64, -20.0, num_levels=17),
        120.0 / (64 * math.log(2)) + math.log2(17),
    )

    # The model uniform on [0, 1)^64 in pixel space has nll_x = 0, i.e. log2(17) bits/dim on the
    # 17-level scale; on logit data its NLL is nll_y = logit_logdet(y).
    @jax.jit
    def uniform_model_bits_per_dim(y):
        nll_y = data.logit_logdet(y, 0.05)
        return data.bits_per_dim(nll_y, 64, data.logit_logdet(y, 0.05), num_levels=17)

    np.testing.assert_allclose(uniform_model_bits_per_dim(digits.test), math.log2(17), rtol=1e-6)
