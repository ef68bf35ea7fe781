"""Numerical inverses, the monotone transformers built on them, and the bounded/positive supports.

The generic checks (round trips, log-det vs Jacobian, jit/vmap/grad, float32 and float64) are in
the conformance registry; these are the solver's own properties: accuracy against a closed-form
inverse, implicit gradients equal to the closed form's, the convergence flag and the debug error
on an unreachable target, bracket expansion, and the supports' densities against scipy.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import flowjax_lab as fl
from registry import _sinh_arcsinh

T = fl.transforms


def spline_and_params(scale, shape=(64,), seed=0):
    t = T.spline(bins=6, bound=2.0)
    p = t.init(jax.random.key(seed), jnp.zeros(shape))
    return t, fl.testing.randomize_params(jax.random.key(seed + 1), p, scale)


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.0])
def test_numerical_inverse_matches_the_closed_form_spline_inverse(scale):
    t, p = spline_and_params(scale)
    z = 3.0 * jax.random.normal(jax.random.key(2), (64,))  # bins and both tails
    x_exact, ld_exact = t.inverse(p, z)
    x, ld = jax.jit(T.numerical_inverse(t).inverse)(p, z)
    chex.assert_trees_all_close((x, ld), (x_exact, ld_exact), atol=2e-5, rtol=2e-5)
    result = T.solve_monotone(lambda v: t.apply(p, v)[0], z)
    assert bool(jnp.all(result.converged))
    assert float(jnp.max(jnp.abs(t.apply(p, result.x)[0] - z))) < 1e-5


def test_implicit_gradients_equal_the_closed_form_gradients():
    """d x / d params and d x / d z by the implicit function theorem (no backprop through the
    iterations) equal the gradients of the exact RQS inverse."""
    t, p = spline_and_params(1.0, (8,))
    z = 2.0 * jax.random.normal(jax.random.key(3), (8,))
    numerical = T.numerical_inverse(t)

    def objective(inverse):
        def f(params, z):
            x, ld = inverse(params, z)
            return jnp.sum(jnp.sin(x)) + ld

        return jax.grad(f, argnums=(0, 1))

    got = jax.jit(objective(numerical.inverse))(p, z)
    want = objective(t.inverse)(p, z)
    chex.assert_trees_all_close(got, want, atol=5e-5, rtol=5e-5)


def test_unreachable_target_is_flagged_and_finite_and_debug_raises():
    # exp never reaches -1: the best point is returned with converged = False, never NaN
    result = jax.jit(lambda z: T.solve_monotone(jnp.exp, z))(jnp.array([-1.0, 2.0]))
    assert result.converged.tolist() == [False, True]
    assert bool(jnp.all(jnp.isfinite(result.x)))
    chex.assert_trees_all_close(result.x[1], jnp.log(2.0), atol=1e-6)
    with pytest.raises(Exception, match="did not converge at 1 element"):
        jax.block_until_ready(T.solve_monotone(jnp.exp, jnp.array([-1.0, 2.0]), debug=True))


def test_bracket_grows_to_far_roots_and_few_iterations_are_flagged():
    z = jnp.array([1e6, -1e6, 0.0, 1e-7])
    result = T.solve_monotone(lambda x: x**3, z)  # roots +-100 from the bracket [-1, 1]
    assert bool(jnp.all(result.converged))
    chex.assert_trees_all_close(result.x, jnp.cbrt(z), atol=1e-5, rtol=1e-6)
    short = T.solve_monotone(lambda x: x**3, z, bisection_steps=2, newton_steps=0)
    assert not bool(jnp.all(short.converged))
    # the bracket doubles its width per step: 64 steps reach 2^65 (a linear walk would stop at 129)
    far = T.solve_monotone(lambda x: 1e-3 * x, jnp.array([1e12, -3e12]))
    assert bool(jnp.all(far.converged))
    chex.assert_trees_all_close(far.x, jnp.array([1e15, -3e15]), rtol=1e-6)
    too_far = T.solve_monotone(lambda x: x, jnp.array([1e30]), expand_steps=10)
    assert not bool(too_far.converged[0])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(lower=1.0, upper=-1.0), "lower < upper"),
        (dict(tol=0.0), "tol must be > 0"),
        (dict(bisection_steps=-1), "bisection_steps"),
        (dict(newton_steps=1.5), "newton_steps"),
    ],
)
def test_bad_solver_options_are_refused_before_any_work(options, message):
    with pytest.raises(ValueError, match=message):
        T.numerical_inverse(T.spline(), **options)


def test_transformers_start_at_the_identity_and_bad_arguments_are_named():
    x = jnp.linspace(-4.0, 4.0, 9)
    sos = T.sos_transformer(3, 2)
    y, ld = sos.forward(x, jnp.zeros((9, sos.num_params)))
    chex.assert_trees_all_close((y, ld), (x, jnp.zeros(9)), atol=1e-6)
    dsf = T.dsf_transformer(5)
    y, ld = dsf.forward(x, jnp.zeros((9, dsf.num_params)))
    chex.assert_trees_all_close(y[4], 0.0, atol=1e-6)  # f(0) = 0 by symmetry
    assert bool(jnp.all(jnp.diff(y) > 0)) and bool(jnp.all(jnp.isfinite(ld)))
    one = T.dsf_transformer(1)  # a single unit at zero raw params is exactly the identity
    chex.assert_trees_all_close(one.forward(x, jnp.zeros((9, 3)))[0], x, atol=1e-5)
    with pytest.raises(ValueError, match="degree"):
        T.sos_transformer(-1)
    with pytest.raises(ValueError, match="min_slope"):
        T.sos_transformer(2, 2, min_slope=0.0)
    with pytest.raises(ValueError, match="units"):
        T.dsf_transformer(0)
    with pytest.raises(ValueError, match="or a Transformer"):
        T.maf((8,), transformer="cubic")


def test_dsf_is_monotone_and_finite_far_out_in_its_tails():
    dsf = T.dsf_transformer(4)
    raw = 3.0 * jax.random.normal(jax.random.key(0), (1, dsf.num_params))
    x = jnp.linspace(-300.0, 300.0, 2001)
    y, ld = dsf.forward(x, jnp.broadcast_to(raw, (x.size, dsf.num_params)))
    assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(ld)))
    assert bool(jnp.all(jnp.diff(y) > 0))


def test_a_users_transformer_plugs_into_maf_and_coupling():
    """The sinh-arcsinh map, given only its forward, in a MAF (sequential numerical solve) and a
    coupling: the round trip returns x and the log-dets are negatives."""

    tr = T.numerical_transformer(2, _sinh_arcsinh)
    x = jax.random.normal(jax.random.key(1), (5,))
    for layer in (T.maf((16,), tr), T.coupling(tr, (16,))):
        p = fl.testing.randomize_params(jax.random.key(2), layer.init(jax.random.key(0), x), 0.3)
        z, ld = layer.apply(p, x)
        x_back, ld_back = layer.inverse(p, z)
        chex.assert_trees_all_close((x_back, ld_back), (x, -ld), atol=2e-5, rtol=2e-5)


def test_supports_give_the_textbook_densities():
    """A standard normal pushed through exp is log-normal, through low + (high - low) sigmoid is
    logit-normal on (low, high), through x -> x^p of a log-normal is log-normal(0, p)."""
    normal = lambda: fl.standard_normal((1,))  # noqa: E731
    x = jnp.linspace(0.05, 6.0, 50)[:, None]
    lognormal = fl.make_flow(fl.invert(T.exp()), normal())
    chex.assert_trees_all_close(
        lognormal.log_prob({}, x), scipy.stats.lognorm(1.0).logpdf(x[:, 0]), atol=1e-4, rtol=1e-5
    )
    powered = fl.make_flow(fl.chain(fl.invert(T.power(2.0)), fl.invert(T.exp())), normal())
    chex.assert_trees_all_close(
        powered.log_prob(({}, {}), x),
        scipy.stats.lognorm(2.0).logpdf(x[:, 0]),
        atol=1e-4,
        rtol=1e-5,
    )
    u = jnp.linspace(-0.95, 1.95, 40)[:, None]
    bounded = fl.make_flow(fl.invert(T.to_interval(-1.0, 2.0)), normal())
    v = (np.asarray(u[:, 0]) + 1.0) / 3.0
    want = scipy.stats.norm.logpdf(np.log(v) - np.log1p(-v)) - np.log(3.0 * v * (1.0 - v))
    chex.assert_trees_all_close(bounded.log_prob({}, u), want, atol=1e-4, rtol=1e-5)
    samples = bounded.sample({}, jax.random.key(0), 1000)
    assert float(samples.min()) > -1.0 and float(samples.max()) < 2.0
    positive = fl.make_flow(fl.invert(T.softplus()), normal())
    assert float(positive.sample({}, jax.random.key(1), 1000).min()) > 0.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: T.power(0.0), "exponent must be"),
        (lambda: T.to_interval(1.0, 1.0), "low < high"),
    ],
)
def test_supports_refuse_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_sos_gradients_are_finite_at_exactly_zero():
    t = T.sos_transformer(degree=2, terms=2)
    raw = 0.3 * jax.random.normal(jax.random.key(0), (1 + 2 * 3,))

    def log_slope_and_y(x):
        y, log_d = t.forward(x, raw)
        return y + log_d

    g = jax.grad(log_slope_and_y)(jnp.float32(0.0))
    graw = jax.grad(lambda r: sum(t.forward(jnp.float32(0.0), r)))(raw)
    assert jnp.isfinite(g) and jnp.all(jnp.isfinite(graw))
    y0, _ = t.forward(jnp.float32(0.0), raw)
    chex.assert_trees_all_close(jax.grad(lambda x: t.forward(x, raw)[0])(0.0), jnp.exp(
        t.forward(jnp.float32(0.0), raw)[1]), rtol=1e-5)
    assert jnp.isfinite(y0)
