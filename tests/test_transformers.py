"""The circular spline (angles, the torus) and Bernstein transformers: the properties the generic
checker cannot see (periodicity, the torus density's normalisation, the linear tails, the
polynomial itself) and a fit on the torus against its exact entropy."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import flowjax_lab as fl
from flowjax_lab.transforms.spline import rational_quadratic_spline

T = fl.transforms
PI = math.pi


def _random_raw(key, shape, scale=1.5):
    return scale * jax.random.normal(key, shape)


def test_circular_spline_is_a_circle_map():
    """Identity at zero raw; outputs in [-pi, pi); x and x + 2 pi k give the same output and
    slope; the slopes at -pi and pi are equal (smooth across the circle's one seam)."""
    t = T.circular_spline_transformer(5)
    x = jnp.linspace(-PI, PI, 41)[:-1] + PI / 40  # off the seam (float32 cannot resolve it)
    y0, ld0 = t.forward(x, jnp.zeros((40, t.num_params)))
    chex.assert_trees_all_close((y0, ld0), (x, jnp.zeros(40)), atol=1e-6)
    raw = jnp.broadcast_to(_random_raw(jax.random.key(0), (t.num_params,)), (40, t.num_params))
    y, ld = t.forward(x, raw)
    assert float(jnp.min(y)) >= -PI and float(jnp.max(y)) < PI
    for k in (-2, 1, 3):
        chex.assert_trees_all_close(t.forward(x + 2 * PI * k, raw), (y, ld), atol=1e-4)  # x + 2 pi k rounds
    # the spline's log-slopes at its two end knots -pi and pi (before the wrap makes them one
    # point) are the one shared derivative
    r = raw[0]
    knots = (r[1:6], r[6:11], r[12:16])
    ends = jnp.array([-PI, PI], jnp.float32)
    _, ld_ends = rational_quadratic_spline(ends, *(jnp.stack([k, k]) for k in knots), PI,
                                           jnp.stack([r[11], r[11]]))  # fmt: skip
    np.testing.assert_allclose(ld_ends[0], ld_ends[1], rtol=1e-5)
    assert abs(float(ld_ends[0])) > 0.1  # a learned end slope, not the identity's 1
    # the map is onto the circle: sorted outputs of a fine grid cover it with no gap > 2 pi / 40
    fine = jnp.linspace(-PI, PI, 4001)[:-1]
    yf = np.sort(np.asarray(t.forward(fine, jnp.broadcast_to(raw[0], (4000, t.num_params)))[0]))
    gaps = np.diff(np.concatenate([yf, [yf[0] + 2 * PI]]))
    assert gaps.max() < 2 * PI / 40, gaps.max()


def _torus_flow_params(scale=0.3):
    flow = fl.models.ncsf(2, num_layers=3, hidden=(16,), bins=6)
    params = flow.init(jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [v + scale * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys)]
    return flow, jax.tree.unflatten(tree, noisy)


def test_ncsf_density_is_normalised_and_periodic_on_the_torus():
    flow, params = _torus_flow_params()
    n = 256
    grid = -PI + (jnp.arange(n) + 0.5) * (2 * PI / n)
    xx = jnp.stack(jnp.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    log_p = flow.log_prob(params, xx)
    total = float(jnp.sum(jnp.exp(log_p)) * (2 * PI / n) ** 2)
    assert abs(total - 1.0) < 2e-3, total
    # not the uniform density: the perturbed params do something
    assert float(jnp.std(log_p)) > 0.05
    # continuous across both seams: log p(-pi + e, y) ~ log p(pi - e, y), same for the 2nd angle
    e, ys = 1e-4, jnp.linspace(-3.0, 3.0, 13)
    for axis in (0, 1):
        lo = jnp.stack([jnp.full(13, -PI + e), ys], axis=-1)[:, :: 1 if axis == 0 else -1]
        hi = jnp.stack([jnp.full(13, PI - e), ys], axis=-1)[:, :: 1 if axis == 0 else -1]
        chex.assert_trees_all_close(flow.log_prob(params, lo), flow.log_prob(params, hi), atol=1e-2)
    # samples are angles
    s = flow.sample(params, jax.random.key(2), 500)
    assert float(jnp.min(s)) >= -PI and float(jnp.max(s)) < PI


def _von_mises_entropy(kappa):
    ratio = special.i1e(kappa) / special.i0e(kappa)
    return math.log(2 * PI * special.i0e(kappa)) + kappa - kappa * ratio


def test_ncsf_fits_a_correlated_von_mises_pair_near_its_entropy():
    """x1 ~ vM(1, 2), x2 | x1 ~ vM(x1 + 2, 4), wrapped: a density on the torus that crosses the
    seam, with entropy H(vM(2)) + H(vM(4)) exactly (2.075 nats; the uniform base: 3.676).
    600 steps: test NLL within 0.15 nats of it (measured 2.165, a 0.09 gap)."""
    rng = np.random.default_rng(0)
    n = 6000
    x1 = rng.vonmises(1.0, 2.0, n)
    x2 = rng.vonmises(0.0, 4.0, n) + x1 + 2.0
    data = np.stack([x1, (x2 + PI) % (2 * PI) - PI], axis=1).astype(np.float32)
    entropy = _von_mises_entropy(2.0) + _von_mises_entropy(4.0)
    flow = fl.models.ncsf(2, num_layers=4, hidden=(32, 32), bins=8)
    result = fl.fit(jax.random.key(0), flow, flow.init(jax.random.key(1)), data=data[:5000],
                    steps=600, batch_size=256, optimizer=fl.default_optimizer(600, 5e-3),
                    progress=False)  # fmt: skip
    nll = -float(jnp.mean(flow.log_prob(result.params, data[5000:])))
    uniform = math.log(4 * PI**2)
    assert nll < entropy + 0.15, (nll, entropy, uniform)


def test_bernstein_is_the_polynomial_with_linear_tails():
    """Inside [-B, B] f is -B + 2B sum theta_k C(n, k) u^k (1 - u)^(n - k) (computed here with
    scipy's binomials); outside, the tangent lines at +-B; zero raw is the identity."""
    n, b = 6, 2.0
    t = T.bernstein_transformer(n, b)
    x = jnp.linspace(-1.99, 1.99, 9)
    chex.assert_trees_all_close(t.forward(x, jnp.zeros((9, n))), (x, jnp.zeros(9)), atol=1e-6)
    raw = _random_raw(jax.random.key(3), (n,), 2.0)
    delta = np.asarray(jax.nn.softmax(3.0 * np.tanh(np.asarray(raw) / 3.0)), np.float64)
    theta = np.concatenate([[0.0], np.cumsum(delta)])
    u = (np.asarray(x, np.float64) + b) / (2 * b)
    k = np.arange(n + 1)
    basis = special.comb(n, k) * u[:, None] ** k * (1 - u[:, None]) ** (n - k)
    want = -b + 2 * b * basis @ theta
    y, _ = t.forward(x, jnp.broadcast_to(raw, (9, n)))
    np.testing.assert_allclose(y, want, atol=2e-5)
    # linear tails, C^1 at the ends
    tails = jnp.array([-5.0, -2.5, 2.5, 7.0])
    yt, ldt = t.forward(tails, jnp.broadcast_to(raw, (4, n)))
    lo, hi = n * delta[0], n * delta[-1]
    np.testing.assert_allclose(yt, [-b + lo * (-3.0), -b + lo * (-0.5), b + hi * 0.5, b + hi * 5.0],
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(ldt, np.log([lo, lo, hi, hi]), rtol=1e-5)
    slope = jax.grad(lambda v: t.forward(v, raw)[0])
    for edge, tail in ((-b, lo), (b, hi)):  # the polynomial's slope at the end is the tail's
        np.testing.assert_allclose(slope(jnp.float32(edge)), tail, rtol=1e-5)
        np.testing.assert_allclose(slope(jnp.float32(edge * 1.001)), tail, rtol=1e-5)


@pytest.mark.parametrize("bad", [dict(degree=0), dict(bound=0.0), dict(bound=-1.0)])
def test_bernstein_bad_arguments_are_named(bad):
    args = dict(degree=4, bound=2.0) | bad
    with pytest.raises(ValueError, match="bernstein_transformer"):
        T.bernstein_transformer(**args)


def test_coupling_features_must_be_a_function():
    with pytest.raises(ValueError, match="features must be a function"):
        T.coupling("affine", (8,), features="angles")


def test_umnn_is_the_integral_of_its_positive_integrand():
    """Zero raw is the identity; f(x) - f(0) is int_0^x g by an independent quadrature (scipy's
    adaptive quad of exp(log f'), the transformer's own slope, held constant past the bound);
    the slope is positive."""
    from scipy import integrate

    t = T.umnn_transformer(units=4, nodes=64)
    x = jnp.linspace(-4.0, 4.0, 9)
    chex.assert_trees_all_close(t.forward(x, jnp.zeros((9, 14))), (x, jnp.zeros(9)), atol=1e-5)
    raw = _random_raw(jax.random.key(5), (14,), 1.0)
    slope = lambda v: float(jnp.exp(t.forward(jnp.float32(v), raw)[1]))  # noqa: E731
    y0 = float(t.forward(jnp.float32(0.0), raw)[0])
    for v in (-9.0, -3.5, -1.0, 0.7, 4.0, 7.5):
        want = integrate.quad(slope, 0.0, v, epsabs=1e-9, limit=200)[0]
        np.testing.assert_allclose(float(t.forward(jnp.float32(v), raw)[0]) - y0, want, rtol=2e-5)
    grid = jnp.linspace(-8.0, 8.0, 401)
    assert bool(jnp.all(t.forward(grid, jnp.broadcast_to(raw, (401, 14)))[1] > jnp.log(1e-3) - 1e-6))
    with pytest.raises(ValueError, match="umnn_transformer: nodes"):
        T.umnn_transformer(nodes=1)
