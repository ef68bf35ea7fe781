"""Householder and Sylvester flows: dense references, invertibility by construction, inversion
accuracy, implicit gradients, the amortised VAE posterior and a VAE fit on digits.

Tests named ``*_any_precision`` run here in float32 and again in float64 in their own process
(``test_float64_in_own_process``), with tolerances set by the dtype. The generic checks (round
trips, log-det vs slogdet(jacfwd), vmap, jit) are the registry's (tests/registry.py).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sklearn.datasets
from jax.test_util import check_grads

import flowjax_lab as fl
from flowjax_lab.transforms.sylvester import _basis, _triangles
from x64_launcher import run_pytest_in_float64

T = fl.transforms
X64 = jax.config.jax_enable_x64
DTYPE = jnp.float64 if X64 else jnp.float32
EPS = float(jnp.finfo(DTYPE).eps)
KINDS = [("orthogonal", 3), ("householder", 5), ("triangular", 5), ("triangular_reverse", 4)]


def _layer(kind, m):
    if kind == "triangular_reverse":
        return T.sylvester("triangular", m, reverse=True)
    return T.sylvester(kind, m)


def _random_params(t, key, d, scale):
    k_init, k_noise = jax.random.split(key)
    return fl.testing.randomize_params(k_noise, t.init(k_init, jnp.zeros(d, DTYPE)), scale)


def _dense(kind, params, d):
    """(Q, R, R~) as matrices: Q's columns are Q applied to the unit vectors of R^M."""
    r, rt, _ = _triangles(params)
    m = r.shape[0]
    reverse = kind == "triangular_reverse"
    _, embed = _basis(kind.removesuffix("_reverse"), reverse, params, d, m)
    return jax.vmap(embed, out_axes=1)(jnp.eye(m, dtype=DTYPE)), r, rt


@pytest.mark.parametrize("kind, m", KINDS)
def test_matches_the_dense_formula_any_precision(kind, m):
    """g(z) = z + Q R tanh(R~ Q^T z + b) with Q^T Q = I, R and R~ upper triangular."""
    d = 5
    t = _layer(kind, m)
    params = _random_params(t, jax.random.key(0), d, 1.0)
    q, r, rt = jax.jit(lambda p: _dense(kind, p, d))(params)
    np.testing.assert_allclose(q.T @ q, np.eye(m), atol=50 * EPS)
    assert np.all(np.tril(r, -1) == 0) and np.all(np.tril(rt, -1) == 0)
    z = jax.random.normal(jax.random.key(1), (8, d), DTYPE)
    x, ld = jax.jit(jax.vmap(t.inverse, (None, 0)))(params, z)
    want = z + jnp.tanh(z @ q @ rt.T + params["b"]) @ (q @ r).T
    np.testing.assert_allclose(x, want, atol=100 * EPS, rtol=100 * EPS)
    # log|det| by Sylvester's identity: prod_i (1 + r_ii r~_ii tanh'(u_i))
    u = z @ q @ rt.T + params["b"]
    want_ld = jnp.sum(jnp.log1p(jnp.diagonal(r) * jnp.diagonal(rt) * (1 - jnp.tanh(u) ** 2)), -1)
    np.testing.assert_allclose(ld, want_ld, atol=100 * EPS, rtol=100 * EPS)


@pytest.mark.parametrize("kind, m", KINDS)
def test_invertible_by_construction_for_random_raw_params(kind, m):
    """r_ii r~_ii >= -1 + 1e-3 and det J_g > 0 at 256 raw param draws of scale 4 (many on the
    floor; g a diffeomorphism)."""
    d = 4 if kind == "triangular_reverse" else 5
    t = _layer(kind, m)
    keys = jax.random.split(jax.random.key(2), 256)
    params = jax.jit(jax.vmap(lambda k: _random_params(t, k, d, scale=4.0)))(keys)
    r, rt, s = jax.jit(jax.vmap(_triangles))(params)
    product = jnp.diagonal(r, axis1=-2, axis2=-1) * jnp.diagonal(rt, axis1=-2, axis2=-1)
    assert float(jnp.min(s)) == pytest.approx(1e-3)  # some draws are on the floor
    assert float(jnp.min(product)) > -1.0 + 1e-3 - 10 * EPS, float(jnp.min(product))
    np.testing.assert_allclose(product, s - 1.0, atol=1e-5 if not X64 else 1e-12)
    z = 2.0 * jax.random.normal(jax.random.key(3), (256, d), DTYPE)
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda p, v: t.inverse(p, v)[0], argnums=1)))(params, z)
    sign, _ = jnp.linalg.slogdet(jac)
    assert bool(jnp.all(sign > 0))


@pytest.mark.parametrize("kind, m", KINDS[:3])
def test_inversion_accuracy_at_large_params_any_precision(kind, m):
    """Raw params of scale 3 (many slopes 1 + r_ii r~_ii tanh' near the floor 1e-3) and |z| up
    to ~1e3: f(x) is an exact preimage of x = g(z) (backward error: a few ulps of the terms),
    and its distance to z is at most that over the smallest slope (forward error)."""
    d, t = 5, _layer(kind, m)
    keys = jax.random.split(jax.random.key(4), 32)
    params = jax.jit(jax.vmap(lambda k: _random_params(t, k, d, scale=3.0)))(keys)
    scales = jnp.array([1.0, 30.0, 1e3], DTYPE)[:, None, None]
    z = (scales * jax.random.normal(jax.random.key(5), (3, 16, d), DTYPE)).reshape(-1, d)

    @jax.jit
    def errors(p):
        x, ld_g = jax.vmap(t.inverse, (None, 0))(p, z)
        z_back, ld_f = jax.vmap(t.apply, (None, 0))(p, x)
        x_back = jax.vmap(t.inverse, (None, 0))(p, z_back)[0]
        r, rt, s = _triangles(p)
        project, _ = _basis(kind, False, p, d, m)
        tanh = jnp.tanh(jax.vmap(project)(z) @ rt.T + p["b"])
        slope = jnp.min(s + (1 - s) * tanh**2, -1)
        size = 1.0 + jnp.abs(x).max(-1) + jnp.abs(r).sum()  # |x| + a bound on |Q R tanh|
        backward = jnp.abs(x_back - x).max(-1) / size
        forward = slope * jnp.abs(z_back - z).max(-1) / size
        # log-dets: f's at the solved point, whose error in absolute terms grows with |x|
        ld_err = jnp.abs(ld_f + ld_g) * slope / size
        return jnp.max(backward), jnp.max(forward), jnp.max(ld_err)

    backward, forward, ld_err = jax.vmap(errors)(params)
    tol = 1e-12 if X64 else 2e-5  # measured 3e-15 and 8e-6 (float32 at the slope floor)
    assert float(jnp.max(backward)) < tol, float(jnp.max(backward))
    assert float(jnp.max(forward)) < tol, float(jnp.max(forward))
    # measured 6e-13 and 4e-5 (householder: K reflections of a |z| ~ 1e3 add their rounding)
    assert float(jnp.max(ld_err)) < (1e-11 if X64 else 1e-4), float(jnp.max(ld_err))


@pytest.mark.parametrize("kind, m", KINDS[:3])
def test_gradients_match_finite_differences_any_precision(kind, m):
    """Implicit derivatives (jvp and vjp) of the numerical f (apply) in x and params vs
    finite differences."""
    d, t = 5, _layer(kind, m)
    params = _random_params(t, jax.random.key(6), d, 0.5)
    x = jax.random.normal(jax.random.key(7), (d,), DTYPE)
    tol = 1e-6 if X64 else 5e-2
    # central differences of step 1e-5 (float64): the householder map's third derivatives make
    # the default 1e-4 step's truncation error (measured 2.6e-6) exceed 1e-6
    eps = 1e-5 if X64 else None
    check_grads(jax.jit(t.apply), (params, x), 1, ("fwd", "rev"), tol, tol, eps)


def test_close_to_but_not_the_identity_at_init():
    z = jax.random.normal(jax.random.key(8), (64, 6), DTYPE)
    for kind in ("orthogonal", "householder", "triangular"):
        t = T.sylvester(kind)
        params = t.init(jax.random.key(9), z[0])
        x, ld = jax.vmap(t.inverse, (None, 0))(params, z)
        change = float(jnp.max(jnp.abs(x - z)))
        assert 1e-4 < change < 0.2, (kind, change)
        assert 0 < float(jnp.max(jnp.abs(ld))) < 0.2, kind


def test_householder_is_the_product_of_reflections():
    d, k = 4, 3
    t = T.householder(k)
    params = t.init(jax.random.key(10), jnp.zeros(d, DTYPE))
    mats = [jnp.eye(d) - 2 * jnp.outer(v, v) / (v @ v) for v in params["v"]]
    want = mats[2] @ mats[1] @ mats[0]  # f = H_3 H_2 H_1
    x = jax.random.normal(jax.random.key(11), (d,), DTYPE)
    z, ld = t.apply(params, x)
    np.testing.assert_allclose(z, want @ x, atol=20 * EPS, rtol=20 * EPS)
    np.testing.assert_allclose(t.inverse(params, z)[0], x, atol=20 * EPS, rtol=20 * EPS)
    np.testing.assert_allclose(want @ want.T, np.eye(d), atol=20 * EPS)
    assert float(ld) == 0.0
    assert T.householder().init(jax.random.key(0), jnp.zeros(d))["v"].shape == (d, d)  # K = d
    # a zero vector is no reflection
    zero = {"v": params["v"].at[1].set(0.0)}
    np.testing.assert_allclose(
        t.apply(zero, x)[0], mats[2] @ mats[0] @ x, atol=20 * EPS, rtol=20 * EPS
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: T.sylvester("cayley"), "kind must be one of .*got 'cayley'"),
        (lambda: T.sylvester("orthogonal", 0), "num_vectors must be a positive integer, got 0"),
        (lambda: T.sylvester(num_reflections=2), "num_reflections=2 is only used by kind='h"),
        (lambda: T.sylvester("householder", reverse=True), "reverse=True is only used by"),
        (lambda: T.householder(0), "num_reflections must be a positive integer, got 0"),
        (lambda: fl.vae.sylvester_posterior(3, num_vectors=4), "num_vectors must be <= lat"),
        (lambda: fl.vae.sylvester_posterior(3, steps=0), "steps must be a positive int"),
        (lambda: fl.vae.vae((16,), 4, posterior="sylvester", num_vectors=5), r"in \[1, 4\], got 5"),
        (lambda: fl.vae.vae((16,), 4, posterior="sylvester", sylvester_kind="x"), "sylvester_kind"),
        (lambda: fl.vae.vae((16,), 4, posterior="sylvester", sylvester_steps=0), "sylvester_steps"),
        (lambda: fl.models.sylvester_flow(3, 2, kind="qr"), "kind must be one of"),
        (lambda: fl.models.sylvester_flow(3, num_vectors=4), r"in \[1, 3\], got 4"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_events_and_params_are_named():
    t = T.sylvester("orthogonal", 3)
    with pytest.raises(ValueError, match=r"num_vectors must be <= the event size d = 2, got 3"):
        t.init(jax.random.key(0), jnp.zeros(2))
    params = t.init(jax.random.key(0), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"expected an event of shape \(d,\), got \(2, 4\)"):
        t.inverse(params, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"params\['q'\] has shape \(4, 3\), expected \(5, 3\)"):
        t.apply(params, jnp.zeros(5))
    post = fl.vae.sylvester_posterior(3, 2, context_dim=2)
    p = post.init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"context \[mu, log_sigma, h\] of shape \(8,\)"):
        post.inverse(p, jnp.zeros(3), context=jnp.zeros(6))


def _binary(key, n, dim=16):
    return (jax.random.uniform(key, (n, dim)) < 0.3).astype(DTYPE)


@pytest.mark.parametrize("kind", ["householder", "triangular"])  # orthogonal: the fit below
def test_vae_log_q_of_samples_is_its_density_and_is_amortised(kind):
    """log q from sampling (one pass per step) equals the density direction (numerical
    inverse) at the samples; two images get different flows (the heads read h)."""
    model = fl.vae.vae(
        (16,), latent_dim=3, hidden=(16,), posterior="sylvester", sylvester_steps=2,
        sylvester_kind=kind, context_dim=4,
    )  # fmt: skip
    p = jax.jit(model.init)(jax.random.key(0))
    p = fl.testing.randomize_params(jax.random.key(1), p, 0.3)
    x = _binary(jax.random.key(2), 2)

    @jax.jit
    def run(p, x):
        z, log_q = model.sample_and_log_q(p, x[0], jax.random.key(3), 4)
        density = jax.vmap(lambda zi: model.log_q(p, x[0], zi))(z)
        # the same eps through the flows of the two images' contexts, minus the Gaussian part
        ctx = model.encode(p, x)
        eps = jnp.full((3,), 0.5, DTYPE)
        inverse = model.posterior.transform.inverse
        z_of = jax.vmap(lambda c: inverse(p["posterior"], eps, context=c)[0])(ctx)
        return log_q, density, z_of - (ctx[:, :3] + jnp.exp(ctx[:, 3:6]) * eps)

    log_q, density, flow_part = run(p, x)
    np.testing.assert_allclose(density, log_q, atol=1e-4 if not X64 else 1e-10)
    assert float(jnp.std(log_q)) > 0.1  # a non-trivial posterior
    assert float(jnp.max(jnp.abs(flow_part[0] - flow_part[1]))) > 1e-3  # per-x flows differ


def test_vae_with_sylvester_posterior_fits_digits():
    """300 ELBO steps on 1,500 binarised 8x8 digits (d = 4, 2 orthogonal Sylvester steps):
    minus the validation ELBO drops from ~44 nats (64 log 2) to below 24 (measured 21.8; the
    diagonal posterior at the same steps reaches 22.0: benchmarks/vae_posteriors.py compares
    them at longer schedules)."""
    pixels = sklearn.datasets.load_digits().data.astype(np.float32) / 16.0
    train, val = pixels[:1500], (pixels[1500:] > 0.5).astype(np.float32)
    model = fl.vae.vae(
        (64,), latent_dim=4, hidden=(32,), posterior="sylvester", sylvester_steps=2
    )
    params = jax.jit(model.init)(jax.random.key(0))
    val_elbo = jax.jit(lambda p: jnp.mean(model.elbo(p, val, jax.random.key(1), 1)))
    start = -float(val_elbo(params))
    result = fl.fit(
        jax.random.key(9), model, params, objective="elbo", data=train, binarize="dynamic",
        steps=300, batch_size=64, optimizer=optax.adam(3e-3), progress=False,
    )  # fmt: skip
    end = -float(val_elbo(result.params))
    assert start > 40.0, start
    assert end < 24.0, end


@pytest.mark.slow
@pytest.mark.skipif(X64, reason="this is the float64 launcher")
def test_float64_in_own_process():
    run_pytest_in_float64(os.path.abspath(__file__), "-k", "any_precision")
