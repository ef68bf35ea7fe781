"""Rational-quadratic spline and affine transformer invariants, and the elementwise spline layer.

Generic checks (round trip, log-det vs Jacobian, jit/vmap/grad) are in the conformance registry;
these are the spline's own properties: identity at zero params, strict monotonicity over the
bins and tails, exactness on the knots, and a continuous derivative (C^1) across +-B.
"""

from functools import partial

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax_lab as fl
from flowjax_lab.transforms.spline import (
    LOG_SCALE_BOUND,
    LOG_SLOPE_BOUND,
    affine_transformer,
    affine_transformer_inverse,
    rational_quadratic_spline,
    rational_quadratic_spline_inverse,
    spline_knots,
)

K, B = 6, 2.0
# Tests compile many tiny programs: skip LLVM's expensive passes (halves compile time).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def raw_params(seed, n, scale=1.0, bins=K):
    """(widths, heights, derivatives) for n elements, N(0, scale^2), from a numpy seed."""
    rng = np.random.default_rng(seed)
    draw = lambda m: jnp.asarray(scale * rng.standard_normal((n, m)), jnp.float32)  # noqa: E731
    return draw(bins), draw(bins), draw(bins - 1)


@partial(jax.jit, compiler_options=FAST_COMPILE)
def forward_and_inverse(x, w, h, d):
    y, ld = rational_quadratic_spline(x, w, h, d, B)
    x_back, ld_back = rational_quadratic_spline_inverse(y, w, h, d, B)
    return y, ld, x_back, ld_back


@partial(jax.jit, compiler_options=FAST_COMPILE)
def slope(x, w, h, d):
    """dy/dx by autodiff, elementwise (independent of the spline's own log-det formula)."""
    return jax.vmap(jax.grad(lambda v, *p: rational_quadratic_spline(v, *p, B)[0]))(x, w, h, d)


def test_identity_at_zero_params():
    x = jnp.linspace(-2 * B, 2 * B, 401)
    zeros = raw_params(0, x.size, scale=0.0)
    y, ld, x_back, ld_back = forward_and_inverse(x, *zeros)
    chex.assert_trees_all_close((y, x_back), (x, x), atol=1e-6, rtol=0)
    chex.assert_trees_all_close((ld, ld_back), (jnp.zeros_like(x),) * 2, atol=1e-6, rtol=0)
    xk, yk, dk = spline_knots(*(a[0] for a in zeros), B)
    np.testing.assert_allclose(xk, np.linspace(-B, B, K + 1), atol=1e-6)
    np.testing.assert_allclose(yk, xk, atol=0)
    np.testing.assert_allclose(dk, np.ones(K + 1), atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_strictly_monotone_with_identity_tails(scale):
    """On a grid over [-2B, 2B], y increases strictly, and y = x with log-det 0 outside [-B, B]."""
    x = jnp.linspace(-2 * B, 2 * B, 4001)
    for seed in range(3):
        params = tuple(jnp.broadcast_to(a[:1], (x.size, a.shape[1])) for a in raw_params(seed, 1))
        params = tuple(scale * a for a in params)
        y, ld, x_back, _ = forward_and_inverse(x, *params)
        assert np.all(np.diff(np.asarray(y)) > 0), "spline not strictly increasing"
        tails = np.abs(np.asarray(x)) > B
        np.testing.assert_array_equal(np.asarray(y)[tails], np.asarray(x)[tails])
        np.testing.assert_array_equal(np.asarray(ld)[tails], 0.0)
        assert np.all(np.abs(np.asarray(y)[~tails]) <= B)
        np.testing.assert_allclose(np.exp(ld), slope(x, *params), rtol=2e-5, atol=1e-6)
        if scale == 1.0:
            np.testing.assert_allclose(x_back, x, atol=2e-5)


def test_exact_on_knots():
    """Knot j maps to y knot j with slope derivative j; the inverse maps y knot j to x knot j.

    Knots and spline run in one jitted program, as inside a layer (a knot recomputed by a
    different program may differ in the last ulp and fall in the neighbouring bin).
    """
    n = 5

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def on_knots(w, h, d):
        params = tuple(jnp.repeat(a, K + 1, axis=0) for a in (w, h, d))  # one row per knot
        xk, yk, dk = (
            a.reshape(n, K + 1, K + 1)[:, np.arange(K + 1), np.arange(K + 1)]
            for a in spline_knots(*params, B)
        )  # row j of element i: knot j
        y, ld = rational_quadratic_spline(xk.reshape(-1), *params, B)
        x, ld_back = rational_quadratic_spline_inverse(yk.reshape(-1), *params, B)
        return xk, yk, dk, y, ld, x, ld_back

    xk, yk, dk, y, ld, x_back, ld_back = on_knots(*raw_params(1, n))
    np.testing.assert_allclose(y, yk.reshape(-1), atol=3e-7, rtol=0)
    np.testing.assert_allclose(x_back, xk.reshape(-1), atol=3e-7, rtol=0)
    np.testing.assert_allclose(np.exp(ld), dk.reshape(-1), rtol=1e-5)
    np.testing.assert_allclose(ld_back, -ld, atol=1e-5)
    np.testing.assert_array_equal(xk[:, [0, -1]], np.tile([-B, B], (n, 1)))
    assert np.all(np.diff(np.asarray(xk)) > 0) and np.all(np.diff(np.asarray(yk)) > 0)
    assert np.all(np.asarray(dk) > 0)


def test_derivative_continuous_at_bound():
    """The boundary derivatives are 1, matching the identity tails: slope -> 1 from both sides."""
    w, h, d = (3.0 * a for a in raw_params(2, 1))
    eps = 1e-5  # well inside the edge bins (each at least 1e-3 of 2B wide)
    x = jnp.asarray([-B - eps, -B, -B + eps, B - eps, B, B + eps])
    rep = lambda a: jnp.broadcast_to(a, (x.size, a.shape[1]))  # noqa: E731
    g = np.asarray(slope(x, rep(w), rep(h), rep(d)))
    np.testing.assert_allclose(g[[0, 1, 4, 5]], 1.0, rtol=1e-6)
    # one bin-scale step inside, the slope has moved away from 1 by O(eps) only
    np.testing.assert_allclose(g[[2, 3]], 1.0, atol=0.2)
    _, _, dk = spline_knots(w, h, d, B)
    np.testing.assert_array_equal(np.asarray(dk)[0, [0, -1]], 1.0)


def test_slopes_stay_bounded_under_extreme_params():
    """Raw params of +-1e4 (a conditioner far out): every bin's mean slope and every knot
    derivative stay in [e^-L, e^L], the slope everywhere in [9.0e-4, 24.2], and the inverse
    still recovers x (issue 17: the unbounded parametrisation reached slopes below 1e-15, where
    two points 4.5 apart had the same image in float64)."""
    w = jnp.asarray([[-1e4, 1e4, 0.0, 0.0, 0.0, 0.0]])
    h = jnp.asarray([[1e4, -1e4, 1e4, -1e4, 0.0, 0.0]])
    d = jnp.asarray([[1e4, -1e4, 1e4, -1e4, 1e4]])
    xk, yk, dk = (np.asarray(a) for a in spline_knots(w, h, d, B))
    assert np.all(np.isfinite(xk)) and np.all(np.diff(xk) >= 1e-3 * 2 * B * 0.999)
    bound = np.exp(LOG_SLOPE_BOUND) * (1 + 1e-5)
    assert np.all(np.diff(yk) / np.diff(xk) <= bound) and np.all(
        np.diff(yk) / np.diff(xk) >= 1 / bound
    )
    assert np.all(dk <= bound) and np.all(dk >= 1 / bound)
    x = jnp.linspace(-B, B, 2001)
    params = tuple(jnp.repeat(a, x.size, 0) for a in (w, h, d))
    y, ld, x_back, ld_back = forward_and_inverse(x, *params)
    assert float(jnp.min(ld)) >= np.log(9.0e-4) - 1e-4 and float(jnp.max(ld)) <= np.log(24.2) + 1e-4
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    # in bins 1e-3 of 2B wide whose log-slope runs from -L to L, float32's error in xi moves it
    np.testing.assert_allclose(ld_back, -ld, atol=3e-2)


def test_spline_argument_and_shape_errors():
    with pytest.raises(ValueError, match="K - 1 derivatives"):
        rational_quadratic_spline(jnp.zeros(()), jnp.zeros(4), jnp.zeros(4), jnp.zeros(4), B)
    with pytest.raises(ValueError, match="spline: bins must be an integer >= 2, got 1"):
        fl.transforms.spline(bins=1)
    with pytest.raises(ValueError, match="positive bound"):
        fl.transforms.spline(bound=-1.0)
    t = fl.transforms.spline(bins=4)
    params = t.init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"expected \{'widths': \(2, 4\)"):
        t.apply(params, jnp.zeros(2))
    with pytest.raises(ValueError, match="floating-point"):
        t.inverse(params, jnp.zeros(3, jnp.int32))


def test_spline_layer_on_knots_and_tails():
    """The elementwise layer on events that sit exactly on knots (+-B included) and in the tails.

    Positions are exact to float32 rounding; log-dets to 5e-5, since a knot's last ulp can put
    it in the neighbouring bin, where the log-slope moves by (ulp / bin width) x curvature.
    """
    d, bins, bound = 4, 5, 1.5
    t = fl.transforms.spline(bins=bins, bound=bound)
    params = fl.testing.randomize_params(
        jax.random.key(1), t.init(jax.random.key(0), jnp.zeros(d)), 1.0
    )
    # event n has element i on knot (n + i) mod (K + 1): every knot of every element is hit
    idx = (np.arange(bins + 1)[:, None] + np.arange(d)[None, :]) % (bins + 1)

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(p):
        xk, yk, dk = spline_knots(p["widths"], p["heights"], p["derivatives"], bound)
        xs, ys = xk[np.arange(d), idx], yk[np.arange(d), idx]
        z, ld = jax.vmap(lambda v: t.apply(p, v))(xs)
        x_back, ld_back = jax.vmap(lambda v: t.inverse(p, v))(ys)
        jac = jax.vmap(jax.jacfwd(lambda v: t.apply(p, v)[0]))(xs)
        want_ld = jnp.sum(jnp.log(dk[np.arange(d), idx]), axis=-1)
        return xs, ys, z, ld, x_back, ld_back, jnp.linalg.slogdet(jac)[1], want_ld

    xs, ys, z, ld, x_back, ld_back, jac_ld, want_ld = run(params)
    np.testing.assert_allclose(z, ys, atol=5e-7, rtol=0)
    np.testing.assert_allclose(x_back, xs, atol=5e-7, rtol=0)
    np.testing.assert_allclose(ld, want_ld, atol=5e-5)
    np.testing.assert_allclose(jac_ld, ld, atol=5e-5)
    np.testing.assert_allclose(ld_back, -ld, atol=5e-5)
    tails = jnp.asarray([-5.0, -bound - 1e-4, bound + 1e-4, 7.0])
    np.testing.assert_array_equal(t.apply(params, tails)[0], tails)
    np.testing.assert_array_equal(t.inverse(params, tails)[0], tails)
    assert float(t.apply(params, tails)[1]) == 0.0


def test_affine_transformer_identity_and_bounded_scale():
    x = jnp.linspace(-3.0, 3.0, 7)
    y, ld = affine_transformer(x, jnp.zeros((7, 2)))
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(ld, 0.0)
    raw = jnp.stack([jnp.full(7, 0.5), jnp.asarray([-1e6, -50.0, -1.0, 0.0, 1.0, 50.0, 1e6])], -1)
    y, ld = affine_transformer(x, raw)
    assert np.all(np.abs(np.asarray(ld)) <= LOG_SCALE_BOUND)
    np.testing.assert_allclose(ld[2:5], [1.0, 0.0, -1.0], atol=0.02)  # ~identity near zero
    x_back, ld_back = affine_transformer_inverse(y, raw)
    np.testing.assert_allclose(x_back, x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld_back, -ld)
