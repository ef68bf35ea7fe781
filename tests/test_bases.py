"""Trainable bases (fl.bases): params layout, densities against scipy, and training through fit.

The flow-level checks (log_prob = base log-prob of f(x) + log-det, sample_and_log_prob against
sample and log_prob) run on whole models with these bases in the conformance registry.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import flowjax_lab as fl

T = fl.transforms


def test_fixed_base_flows_keep_their_params_and_trainable_ones_nest_them():
    fixed = fl.models.maf(3, 2, (8,))
    p = fixed.init(jax.random.key(0))
    assert not (isinstance(p, dict) and "base" in p)
    flow = fl.models.maf(3, 2, (8,), base="student_t")
    q = flow.init(jax.random.key(0))
    assert set(q) == {"transform", "base"} and set(q["base"]) == {"loc", "log_scale", "log_df"}
    chex.assert_trees_all_equal_shapes(q["transform"], p)
    assert set(
        fl.models.nsf(3, 2, (8,), base="diagonal_normal").init(jax.random.key(0))["base"]
    ) == {
        "loc",
        "log_scale",
    }
    with pytest.raises(ValueError, match="keys \\['base', 'transform'\\]"):
        flow.log_prob(p, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="base must be one of"):
        fl.models.nsf(3, base="cauchy")
    with pytest.raises(ValueError, match="df must be"):
        fl.bases.student_t((3,), df=0.0)
    assert "log_df" not in fl.bases.student_t((3,), learn_df=False).init(None, jnp.float32)


def test_student_t_base_density_matches_scipy():
    flow = fl.make_flow(T.affine(), fl.bases.student_t((2,), df=3.0))
    p = flow.init(jax.random.key(0))
    p["base"] = {"loc": jnp.array([0.5, -1.0]), "log_scale": jnp.log(jnp.array([2.0, 0.5])),
                 "log_df": jnp.log(jnp.array([3.0, 7.0]))}  # fmt: skip
    x = jnp.array([[0.0, 0.0], [4.0, -3.0], [-20.0, 2.0]])
    want = scipy.stats.t(3.0, 0.5, 2.0).logpdf(x[:, 0]) + scipy.stats.t(7.0, -1.0, 0.5).logpdf(
        x[:, 1]
    )
    chex.assert_trees_all_close(flow.log_prob(p, x), want, atol=1e-4, rtol=1e-5)
    chex.assert_trees_all_close(fl.to_distrax(flow, p).log_prob(x), want, atol=1e-4, rtol=1e-5)


def test_mle_learns_heavy_tails_and_reverse_kl_trains_the_base():
    """fit by MLE on Student-t(df = 1.5) data moves the learned df from 5 to below 2.5; fit by
    reverse KL moves a diagonal-normal base onto N((2, -1), diag(0.5, 2)^2)."""
    data = np.asarray(jax.random.t(jax.random.key(1), 1.5, (4000, 2)))
    flow = fl.make_flow(T.affine(), fl.bases.student_t((2,)))
    result = fl.fit(jax.random.key(2), flow, flow.init(jax.random.key(0)), data=data, steps=400,
                    batch_size=256, optimizer=fl.default_optimizer(400, 3e-2), progress=False)  # fmt: skip
    df = np.exp(np.asarray(result.params["base"]["log_df"]))
    assert np.all(df < 2.5), df

    loc, scale = jnp.array([2.0, -1.0]), jnp.array([0.5, 2.0])
    target = lambda x: jnp.sum(jax.scipy.stats.norm.logpdf(x, loc, scale), axis=-1)  # noqa: E731
    flow = fl.make_flow(T.reverse_permutation(), fl.bases.diagonal_normal((2,)))
    result = fl.fit(jax.random.key(3), flow, flow.init(jax.random.key(0)), objective="reverse_kl",
                    target_log_prob=target, steps=400, batch_size=256,
                    optimizer=fl.default_optimizer(400, 5e-2), progress=False)  # fmt: skip
    base = result.params["base"]
    chex.assert_trees_all_close(base["loc"], loc[::-1], atol=0.1)
    chex.assert_trees_all_close(jnp.exp(base["log_scale"]), scale[::-1], atol=0.1)


def test_temperature_shrinks_towards_the_learned_loc_not_zero():
    flow = fl.make_flow(T.affine(), fl.bases.diagonal_normal((2,)))
    p = flow.init(jax.random.key(0))
    p["base"]["loc"] = jnp.array([3.0, -2.0])
    p["base"]["log_scale"] = jnp.log(jnp.array([0.5, 2.0]))
    x = fl.sample_at_temperature(flow, p, jax.random.key(1), 4000, 0.1)
    chex.assert_trees_all_close(x.mean(0), p["base"]["loc"], atol=0.02)
    chex.assert_trees_all_close(x.std(0), 0.1 * jnp.array([0.5, 2.0]), rtol=0.1)
    # Student-t: same centre (its loc), and T = 1 is plain sampling
    t_flow = fl.make_flow(T.affine(), fl.bases.student_t((2,)))
    q = t_flow.init(jax.random.key(0))
    q["base"]["loc"] = jnp.array([3.0, -2.0])
    y = fl.sample_at_temperature(t_flow, q, jax.random.key(1), 4000, 0.01)
    chex.assert_trees_all_close(jnp.median(y, 0), q["base"]["loc"], atol=0.01)
    chex.assert_trees_all_close(
        fl.sample_at_temperature(t_flow, q, jax.random.key(1), 8, 1.0),
        t_flow.sample(q, jax.random.key(1), 8),
    )


def test_wrapped_transform_of_a_trainable_base_flow_is_refused():
    flow = fl.models.maf(3, 2, (8,), base="student_t")
    with pytest.raises(ValueError, match="make_flow\\(chain\\(...\\), flow.base\\)"):
        fl.make_flow(flow.transform, event_shape=(3,))
    with pytest.raises(ValueError, match="trainable base"):
        fl.make_flow(flow.transform, flow.base)


@pytest.mark.parametrize(
    "make",
    [
        lambda base: fl.models.planar_flow(3, 2, base=base),
        lambda base: fl.models.linear_flow(3, 2, base=base),
    ],
    ids=["planar_flow", "linear_flow"],
)
def test_planar_and_linear_models_take_a_trainable_base(make):
    flow = make("student_t")
    p = flow.init(jax.random.key(0))
    assert set(p) == {"transform", "base"}
    x = jax.random.normal(jax.random.key(1), (5, 3))
    assert jnp.all(jnp.isfinite(flow.log_prob(p, x)))
    assert not (isinstance(q := make(None).init(jax.random.key(0)), dict) and "base" in q)


def test_gaussian_mixture_density_and_weighted_draws_are_the_mixture():
    base = fl.bases.gaussian_mixture((2,), 3)
    p = base.init(jax.random.key(0), jnp.float32)
    p = p | {"logits": jnp.array([0.0, 1.0, -1.0]), "log_scale": jnp.full((3, 2), -0.5)}
    x = jnp.array([[0.3, -1.2], [2.0, 0.5]])
    pi = np.asarray(jax.nn.softmax(p["logits"]))
    want = np.log(sum(pi[k] * np.prod(scipy.stats.norm.pdf(
        np.asarray(x), np.asarray(p["loc"][k]), np.exp(-0.5)), axis=-1) for k in range(3)))  # fmt: skip
    chex.assert_trees_all_close(base.distribution(p).log_prob(x), want, rtol=1e-5)
    # the weighted draws estimate E[F] without bias: E[z] = sum_k pi_k mu_k
    z, log_pz, w = base.weighted_sample(p, jax.random.key(1), 30000)
    chex.assert_trees_all_close(jnp.sum(w), 1.0, rtol=1e-5)
    chex.assert_trees_all_close(jnp.sum(w[:, None] * z, 0), pi @ np.asarray(p["loc"]), atol=0.02)
    chex.assert_trees_all_close(log_pz, base.distribution(p).log_prob(z), rtol=1e-5)
    with pytest.raises(ValueError, match="n >= num_components = 3"):
        base.weighted_sample(p, jax.random.key(1), 2)
    with pytest.raises(ValueError, match="spread"):
        fl.bases.gaussian_mixture((2,), 3, spread=-1.0)


def test_reverse_kl_gives_the_mixture_weights_their_exact_gradient():
    """The weighted estimator's gradient in the logits equals the exact one (by quadrature of the
    closed form): d/d logits of KL(q || p) for q a 1-D two-component mixture, p = N(0, 1)."""
    flow = fl.make_flow(T.reverse_permutation(), fl.bases.gaussian_mixture((1,), 2))
    p = flow.init(jax.random.key(0))
    p["base"] = {"logits": jnp.array([0.3, -0.2]), "loc": jnp.array([[-1.0], [1.5]]),
                 "log_scale": jnp.array([[-0.3], [0.2]])}  # fmt: skip
    target = lambda x: jax.scipy.stats.norm.logpdf(x[0])  # noqa: E731
    loss = fl.objectives.reverse_kl(flow, target)
    g = jax.grad(lambda q: loss(q, jax.random.key(5), 200_000))(p)["base"]["logits"]
    grid = jnp.linspace(-12, 12, 48001)[:, None]

    def exact(logits):
        q = p | {"base": p["base"] | {"logits": logits}}
        log_q = flow.log_prob(q, grid)
        return jnp.sum(jnp.exp(log_q) * (log_q - jax.vmap(target)(grid))) * (grid[1, 0] - grid[0, 0])

    chex.assert_trees_all_close(g, jax.grad(exact)(p["base"]["logits"]), atol=0.01)
