"""Planar and radial flows, sigmoid / logit: constraints, inversion accuracy, gradients, a fit.

Tests named ``*_any_precision`` (accuracy and gradients) run here in float32 and again in float64
in their own process (``test_float64_in_own_process``), with tolerances set by the dtype.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import multivariate_normal
from jax.test_util import check_grads

import flowjax_lab as fl
from flowjax_lab.transforms.planar import _planar_parts, _radial_parts
from x64_launcher import run_pytest_in_float64

T = fl.transforms
X64 = jax.config.jax_enable_x64
DTYPE = jnp.float64 if X64 else jnp.float32
EPS = float(jnp.finfo(DTYPE).eps)
TOL = 1e-12 if X64 else 1e-6  # inversion accuracy asked of both flows


def _random_params(t, key, d, scale):
    k_init, k_noise = jax.random.split(key)
    return fl.testing.randomize_params(k_noise, t.init(k_init, jnp.zeros(d, DTYPE)), scale)


def _planar_params(key, d, wu, w_scale):
    """Planar params with w.u set exactly to ``wu`` (w.u_hat = softplus(wu + log(e-1)) - 1)."""
    k1, k2, k3 = jax.random.split(key, 3)
    w = w_scale * jax.random.normal(k1, (d,), DTYPE)
    u = jax.random.normal(k2, (d,), DTYPE)
    u = u + (wu - w @ u) * w / (w @ w)
    return {"w": w, "u": u, "b": jax.random.normal(k3, (), DTYPE)}


def test_identity_at_init():
    x = jax.random.normal(jax.random.key(0), (5,), DTYPE)
    for t in (T.planar(), T.radial()):
        params = t.init(jax.random.key(1), x)
        z, logdet = t.apply(params, x)
        np.testing.assert_allclose(z, x, atol=10 * EPS)
        np.testing.assert_allclose(logdet, 0.0, atol=10 * EPS)
    # legacy keys and the event's dtype
    params = T.planar().init(jax.random.PRNGKey(0), x)
    assert {k: v.dtype for k, v in params.items()} == dict.fromkeys(("w", "u", "b"), DTYPE)


@pytest.mark.parametrize("name", ["planar", "radial"])
def test_invertible_by_construction_for_random_raw_params(name):
    t, d = getattr(T, name)(), 3
    keys = jax.random.split(jax.random.key(1), 256)
    params = jax.jit(jax.vmap(lambda k: _random_params(t, k, d, scale=4.0)))(keys)
    if name == "planar":
        u_hat, s = jax.jit(jax.vmap(_planar_parts))(params)
        w_dot = jnp.sum(params["w"] * u_hat, axis=-1)
        rounding = (
            20 * EPS * jnp.linalg.norm(params["w"], axis=-1) * jnp.linalg.norm(u_hat, axis=-1)
        )
        assert bool(jnp.all(s > 0)), "1 + w.u_hat must be positive"
        assert bool(jnp.all(w_dot >= -1.0 - rounding)), float(jnp.min(w_dot + 1.0))
        np.testing.assert_allclose(w_dot, s - 1.0, atol=float(jnp.max(rounding)) + 10 * EPS)
    else:
        alpha, beta, alpha_beta = jax.jit(jax.vmap(_radial_parts))(params)
        assert bool(jnp.all(alpha > 0)) and bool(jnp.all(alpha_beta > 0))
        assert bool(jnp.all(beta >= -alpha)), float(jnp.min(beta + alpha))
    # det J_g > 0 everywhere: g is a diffeomorphism, not only nonsingular
    z = 2.0 * jax.random.normal(jax.random.key(2), (256, d), DTYPE)
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda p, v: t.inverse(p, v)[0], argnums=1)))(params, z)
    sign, _ = jnp.linalg.slogdet(jac)
    assert bool(jnp.all(sign > 0))


def _planar_round_trip_errors(params, z):
    """Backward and forward errors of f at x = g(z) for a batch z, relative to the terms' size."""
    t = T.planar()
    u_hat, s = _planar_parts(params)
    x = jax.vmap(t.inverse, (None, 0))(params, z)[0]
    z_back, ld_f = jax.vmap(t.apply, (None, 0))(params, x)
    x_back = jax.vmap(t.inverse, (None, 0))(params, z_back)[0]
    norm = lambda v: jnp.linalg.norm(v, axis=-1)  # noqa: E731
    size = 1.0 + norm(x) + norm(z) + norm(u_hat)  # the terms of x = z + u_hat t, per event
    backward = jnp.max(norm(x_back - x) / size)  # f(x) is an exact preimage of x
    t_z = jnp.tanh(z @ params["w"] + params["b"])
    det = s + (1 - s) * t_z**2  # det J_g: 1/det is the condition number of the scalar solve
    forward = jnp.max(det * norm(z_back - z) / size)
    return backward, forward, jnp.all(jnp.isfinite(ld_f))


def test_planar_inversion_accuracy_hard_cases_any_precision():
    """w.u_hat from -1 + 1e-13 (nearly singular) to 29.5, |w| from ~0.2 to ~20, |w.x| to ~1e5."""
    wu, w_scale = (
        a.ravel() for a in np.meshgrid([-30.0, -10.0, -3.0, 0.0, 3.0, 30.0], [0.1, 1, 10])
    )
    keys = jax.random.split(jax.random.key(0), wu.size)
    params = jax.vmap(lambda k, a, c: _planar_params(k, 5, a, c))(keys, wu, w_scale)
    scales = jnp.array([1.0, 100.0, 1e4], DTYPE)[:, None, None]
    z = (scales * jax.random.normal(jax.random.key(1), (3, 64, 5), DTYPE)).reshape(-1, 5)
    backward, forward, finite = jax.jit(jax.vmap(_planar_round_trip_errors, (0, None)))(params, z)
    worst = int(jnp.argmax(jnp.maximum(backward, forward)))
    where = f"w.u={wu[worst]}, |w|~{w_scale[worst]}: {backward[worst]:.2g}, {forward[worst]:.2g}"
    # float32: ~12 ulp at worst (w.u_hat = 29.5: the scalar equation's terms are ~30x |w.z|)
    tol = TOL if X64 else 3e-6
    assert float(jnp.max(backward)) < tol, where
    assert float(jnp.max(forward)) < tol, where
    assert bool(jnp.all(finite))


def test_planar_solve_at_the_flat_point_any_precision():
    """w.u_hat = -1 + 1e-13: g is nearly flat where w.z + b = 0; f must stay finite and exact."""
    t = T.planar()
    params = _planar_params(jax.random.key(0), 2, -30.0, 1.0)
    w, b = params["w"], params["b"]
    z = (-b / (w @ w)) * w + jnp.array([[0.0, 0.0], [1e-3, -2e-3], [1.0, 1.0]], DTYPE)
    x, _ = jax.vmap(t.inverse, (None, 0))(params, z)
    z_back, ld = jax.vmap(t.apply, (None, 0))(params, x)
    x_back, _ = jax.vmap(t.inverse, (None, 0))(params, z_back)
    assert bool(jnp.all(jnp.isfinite(z_back))) and bool(jnp.all(jnp.isfinite(ld)))
    np.testing.assert_allclose(x_back, x, atol=10 * TOL)


def test_radial_inversion_accuracy_any_precision():
    t, d = T.radial(), 4
    apply = jax.jit(jax.vmap(t.apply, (None, 0)))
    inverse = jax.jit(jax.vmap(t.inverse, (None, 0)))
    for raw_alpha, raw_beta in [(0.0, 0.0), (-5.0, -30.0), (3.0, -30.0), (-3.0, 8.0), (2.0, 2.0)]:
        params = t.init(jax.random.key(0), jnp.zeros(d, DTYPE))
        params = {**params, "raw_alpha": jnp.asarray(raw_alpha, DTYPE)}
        params["raw_beta"] = jnp.asarray(raw_beta, DTYPE)
        offsets = jnp.concatenate(
            [
                jnp.zeros((1, d), DTYPE),  # exactly at the centre
                jnp.full((1, d), 1e-30 if X64 else 1e-20, DTYPE),
                jax.random.normal(jax.random.key(1), (32, d), DTYPE),
                1e4 * jax.random.normal(jax.random.key(2), (8, d), DTYPE),
            ]
        )
        z = params["center"] + offsets
        x, ld_g = inverse(params, z)
        z_back, ld_f = apply(params, x)
        scale = 1.0 + jnp.abs(z)
        np.testing.assert_array_less(jnp.abs(z_back - z) / scale, 4 * TOL)
        np.testing.assert_allclose(ld_f, -ld_g, atol=100 * TOL, rtol=10 * TOL)


@pytest.mark.parametrize("name", ["planar", "radial"])
def test_gradients_match_finite_differences_any_precision(name):
    """Implicit (planar) and closed-form (radial) derivatives of f, to second order, vs FD."""
    t, d = getattr(T, name)(), 3
    if name == "planar":
        settings = [_planar_params(jax.random.key(0), d, wu, 1.0) for wu in (-4.0, 0.3, 5.0)]
    else:
        settings = [_random_params(t, jax.random.key(k), d, 1.0) for k in range(2)]
    x = jax.random.normal(jax.random.key(5), (d,), DTYPE)
    tol = 1e-6 if X64 else 5e-2
    order = 2 if X64 else 1
    apply = jax.jit(lambda p, v: t.apply(p, v))
    for params in settings:
        check_grads(apply, (params, x), order, ("fwd", "rev"), tol, tol)


def test_sigmoid_logdet_is_stable_far_in_the_tails():
    t = T.sigmoid()
    x = jnp.array([-100.0, -30.0, 0.0, 30.0, 100.0], jnp.float32)
    s, logdet = jax.jit(t.apply)({}, x)
    # log s(1-s) = -|x| - 2 log(1 + exp(-|x|))
    want = -jnp.sum(jnp.abs(x) + 2.0 * jnp.log1p(jnp.exp(-jnp.abs(x))))
    assert bool(jnp.isfinite(logdet))
    np.testing.assert_allclose(logdet, want, rtol=1e-6)
    np.testing.assert_allclose(s, jax.nn.sigmoid(x))
    grad = jax.grad(lambda v: t.apply({}, v)[1])(x)
    assert bool(jnp.all(jnp.isfinite(grad)))
    u = jnp.array([0.05, 0.5, 0.95], jnp.float32)
    np.testing.assert_allclose(t.apply({}, t.inverse({}, u)[0])[0], u, rtol=1e-6)


def test_logit_is_inverted_sigmoid():
    x = jnp.array([0.05, 0.3, 0.9], jnp.float32)
    z, ld = T.logit().apply({}, x)
    z_ref, ld_ref = T.sigmoid().inverse({}, x)
    np.testing.assert_allclose(z, jnp.log(x / (1 - x)), rtol=1e-6)
    np.testing.assert_allclose(z, z_ref)
    np.testing.assert_allclose(ld, ld_ref)
    assert "(0, 1)" in T.logit.__doc__


@pytest.mark.parametrize(
    "make, params, x",
    [
        (T.planar, None, jnp.zeros((2, 3))),  # batched event
        (T.planar, None, jnp.zeros(3, jnp.int32)),  # not float
        (T.planar, {"w": jnp.zeros(3), "u": jnp.zeros(3)}, jnp.zeros(3)),  # missing b
        (T.radial, {"center": jnp.zeros(2), "raw_alpha": 0.0, "raw_beta": 0.0}, jnp.zeros(3)),
        (T.sigmoid, {"scale": jnp.ones(3)}, jnp.zeros(3)),
    ],
)
def test_bad_input_raises_value_error(make, params, x):
    t = make()
    if params is None:
        params = t.init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="expected"):
        t.apply(params, x)
    with pytest.raises(ValueError, match="expected"):
        t.inverse(params, x)


def test_reverse_kl_planar_stack_fits_correlated_gaussian():
    """8 planar layers, 300 Adam steps: ELBO within 0.1 of log Z = 0 (a normalised target)."""
    mean = jnp.array([0.5, -0.3])
    cov = jnp.array([[2.0, 1.2], [1.2, 1.0]])
    target = lambda x: multivariate_normal.logpdf(x, mean, cov)  # noqa: E731
    flow = fl.make_flow(fl.stack(T.planar(), 8), event_shape=(2,))
    loss = fl.reverse_kl(flow, target)
    opt = optax.adam(1e-2)

    @jax.jit
    def train(params, key):
        def step(carry, k):
            p, state = carry
            grads = jax.grad(loss)(p, k, 128)
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), None

        keys = jax.random.split(key, 300)
        return jax.lax.scan(step, (params, opt.init(params)), keys)[0][0]

    params = train(flow.init(jax.random.key(0)), jax.random.key(1))
    elbo = -float(jax.jit(loss, static_argnums=2)(params, jax.random.key(2), 20_000))
    assert -0.1 < elbo < 0.02, elbo  # ELBO <= log Z up to Monte Carlo error


@pytest.mark.slow
@pytest.mark.skipif(X64, reason="this is the float64 launcher")
def test_float64_in_own_process():
    run_pytest_in_float64(os.path.abspath(__file__), "-k", "any_precision")
