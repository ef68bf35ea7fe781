"""Tests for flowjax_lab.targets: registry conformance, normalisation, reference values."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from flowjax_lab import targets
from flowjax_lab.data import correlated_gaussian

KEY = jax.random.key(0)

# Public factories that need arguments, so they are not in the zero-argument registry.
NOT_IN_REGISTRY = {"gaussian_target"}


def test_every_public_target_factory_is_registered():
    factories = {
        name
        for name, fn in inspect.getmembers(targets, inspect.isfunction)
        if not name.startswith("_") and inspect.signature(fn).return_annotation is targets.Target
    }
    registered = {fn.__name__ for fn in targets.TARGETS.values()}
    assert factories - NOT_IN_REGISTRY == registered


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_jits_vmaps_and_has_finite_gradients(name):
    target = targets.TARGETS[name]()
    assert isinstance(target, targets.Target) and isinstance(target.dim, int)
    assert target.log_z is None or isinstance(target.log_z, float)
    z = 2.0 * jax.random.normal(KEY, (16, target.dim))
    z = z.at[0].set(0.0)  # includes the origin, where |z| is not differentiable

    @jax.jit
    def evaluate(z):
        log_p = jax.vmap(target.log_prob)(z)
        return log_p, jax.vmap(jax.grad(target.log_prob))(z), target.log_prob(z[1]) - log_p[1]

    log_p, grads, single_minus_batched = evaluate(z)
    assert log_p.shape == (16,) and grads.shape == (16, target.dim)
    assert bool(jnp.all(jnp.isfinite(log_p))) and bool(jnp.all(jnp.isfinite(grads)))
    assert single_minus_batched.shape == () and abs(float(single_minus_batched)) < 1e-5


@pytest.mark.parametrize(
    "name, lo, hi",
    [
        ("banana", [-10.0, -4.0], [10.0, 27.0]),
        ("gaussian_mixture", -6.0, 6.0),
        ("correlated_gaussian", -7.0, 7.0),
    ],
)
def test_normalised_targets_integrate_to_one(name, lo, hi):
    target = targets.TARGETS[name]()
    assert target.log_z == 0.0
    assert abs(targets.log_z_by_quadrature(target.log_prob, lo, hi, 500)) < 1e-3


def test_funnel_2d_integrates_to_one():
    # Substitute x = e^{v/2} t so the grid follows the funnel's neck: dx = e^{v/2} dt.
    target = targets.funnel(dim=2)
    assert target.log_z == 0.0
    v = np.linspace(-15.0, 15.0, 1501)
    t = np.linspace(-8.0, 8.0, 401)
    vv, tt = np.meshgrid(v, t, indexing="ij")
    z = np.stack([vv, np.exp(vv / 2) * tt], -1).reshape(-1, 2)
    log_p = np.asarray(jax.jit(jax.vmap(target.log_prob))(jnp.asarray(z)), np.float64)
    integrand = np.exp(log_p.reshape(vv.shape) + vv / 2)
    total = integrand.sum() * (v[1] - v[0]) * (t[1] - t[0])
    assert abs(total - 1.0) < 1e-3


def test_funnel_matches_scipy_in_4d():
    target = targets.funnel(dim=4, sigma=3.0)
    z = np.random.default_rng(0).normal(size=(10, 4))
    expected = scipy.stats.norm.logpdf(z[:, 0], 0.0, 3.0) + scipy.stats.norm.logpdf(
        z[:, 1:], 0.0, np.exp(z[:, :1] / 2)
    ).sum(1)
    np.testing.assert_allclose(jax.jit(jax.vmap(target.log_prob))(z), expected, rtol=1e-5)


def test_banana_matches_scipy():
    target = targets.banana(sigma1=2.0, sigma2=0.5, curvature=0.25)
    z = np.random.default_rng(1).normal(size=(10, 2)) * 2
    expected = scipy.stats.norm.logpdf(z[:, 0], 0.0, 2.0) + scipy.stats.norm.logpdf(
        z[:, 1], 0.25 * (z[:, 0] ** 2 - 4.0), 0.5
    )
    np.testing.assert_allclose(jax.jit(jax.vmap(target.log_prob))(z), expected, rtol=1e-5)


def test_gaussian_target_matches_scipy():
    mean, cov = jax.jit(correlated_gaussian, static_argnums=1)(KEY, 3)
    target = targets.gaussian_target(mean, cov)
    built_in_jit = jax.jit(lambda m, c, z: jax.vmap(targets.gaussian_target(m, c).log_prob)(z))
    assert target.dim == 3 and target.log_z == 0.0
    z = np.random.default_rng(2).normal(size=(10, 3))
    expected = scipy.stats.multivariate_normal(np.asarray(mean), np.asarray(cov)).logpdf(z)
    np.testing.assert_allclose(jax.jit(jax.vmap(target.log_prob))(z), expected, rtol=1e-5)
    np.testing.assert_allclose(built_in_jit(mean, cov, z), expected, rtol=1e-5)


def test_u1_matches_the_paper_formula():
    z = np.random.default_rng(3).uniform(-4.0, 4.0, size=(20, 2))
    norm = np.linalg.norm(z, axis=1)
    u1 = 0.5 * ((norm - 2.0) / 0.4) ** 2 - np.log(
        np.exp(-0.5 * ((z[:, 0] - 2.0) / 0.6) ** 2) + np.exp(-0.5 * ((z[:, 0] + 2.0) / 0.6) ** 2)
    )
    np.testing.assert_allclose(jax.jit(jax.vmap(targets.u1().log_prob))(z), -u1, rtol=1e-5)


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_energy_log_z_by_quadrature_matches_the_stated_value(name):
    target = targets.TARGETS[name]()
    assert target.log_z is None
    log_z = targets.log_z_by_quadrature(target.log_prob, -4.0, 4.0, 500)
    assert abs(log_z - targets.QUADRATURE_LOG_Z[name]) < 1e-3


def test_energy_log_z_closed_forms_on_the_box():
    # U2: each z1-slice integrates to 0.4 sqrt(2 pi); U3: two modes of sd 0.35, both in the box.
    np.testing.assert_allclose(
        targets.QUADRATURE_LOG_Z["u2"], math.log(8 * 0.4 * math.sqrt(2 * math.pi)), atol=1e-4
    )
    np.testing.assert_allclose(
        targets.QUADRATURE_LOG_Z["u3"], math.log(16 * 0.35 * math.sqrt(2 * math.pi)), atol=1e-4
    )


def test_log_z_by_quadrature_in_1d_and_3d():
    def std_normal(z):
        return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[0] * math.log(2 * math.pi)

    assert abs(targets.log_z_by_quadrature(std_normal, -8.0, 8.0, 200, dim=1)) < 1e-5
    assert abs(targets.log_z_by_quadrature(std_normal, -6.0, 6.0, 40, dim=3)) < 1e-4
    shifted = targets.log_z_by_quadrature(lambda z: std_normal(z) + 1.5, -8.0, 8.0, 100)
    assert abs(shifted - 1.5) < 1e-4


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="dim >= 2, got dim=1"):
        targets.funnel(dim=1)
    with pytest.raises(ValueError, match="correlation must be in"):
        targets.correlated_gaussian_target(dim=3, correlation=-0.6)
