"""Ready-made models train to the right answer: held-out NLL against known entropies and bounds."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowjax_lab as fl
from flowjax_lab.data import two_moons


def _gaussian(key, dim):
    a = jax.random.normal(key, (dim, dim))
    cov = a @ a.T / dim + 0.3 * jnp.eye(dim)
    return jnp.linspace(-1.0, 1.0, dim), cov


def _entropy(cov):
    return float(0.5 * jnp.linalg.slogdet(2 * jnp.pi * jnp.e * cov)[1])


def _fit(flow, data, steps, lr=3e-3, batch_size=256, context=None, key=0):
    params = flow.init(jax.random.key(key))
    opt = optax.chain(
        optax.clip_by_global_norm(5.0),
        optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05)),
    )
    result = fl.fit(
        jax.random.key(key + 1),
        flow,
        params,
        data=data,
        context=context,
        steps=steps,
        batch_size=batch_size,
        optimizer=opt,
        progress=False,
    )
    return result.params


@pytest.mark.parametrize("name", ["maf", "iaf", "realnvp", "nsf", "nsf_autoregressive", "planar"])
def test_models_build_and_agree_with_their_samples(name):
    build = {
        "maf": lambda: fl.models.maf(3, 2, (16,), permutation="random", mixing="lu"),
        "iaf": lambda: fl.models.iaf(3, 2, (16,), transformer="spline", elementwise_affine=True),
        "realnvp": lambda: fl.models.realnvp(3, 2, (16,)),
        "nsf": lambda: fl.models.nsf(3, 2, (16,), 4),
        "nsf_autoregressive": lambda: fl.models.nsf(3, 2, (16,), 4, autoregressive=True),
        "planar": lambda: fl.models.planar_flow(3, 3),
    }[name]
    flow = build()
    params = fl.testing.randomize_params(jax.random.key(1), flow.init(jax.random.key(0)), 0.1)
    x, lp = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, jax.random.key(2), 16)
    chex.assert_trees_all_close(lp, jax.jit(flow.log_prob)(params, x), atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["maf", "iaf", "nsf"])
def test_elementwise_affine_option_adds_one_affine_per_step(name):
    """The option must reach the flow: a step with it has one more params entry, per layer."""
    build = getattr(fl.models, name)
    sizes = {}
    for on in (False, True):
        params = build(3, 2, (8,), elementwise_affine=on).init(jax.random.key(0))
        sizes[on] = len(jax.tree.leaves(params))
        n_affine = sum(
            "shift" in jax.tree_util.keystr(path)
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        )
        assert n_affine == int(on), (name, on, n_affine)
    assert sizes[True] > sizes[False]


@pytest.mark.parametrize("name", ["maf", "iaf", "realnvp", "nsf"])
def test_actnorm_option_standardises_every_step_at_data_init(name):
    """``actnorm=True`` puts a data-initialised actnorm after each step's layer: after
    ``fl.data_init`` on a skewed batch, the flow's output on that batch has mean 0 and std 1 per
    dimension (each actnorm standardises what reaches it), log_prob stays the exact change of
    variables (sample/log_prob agree), and without the option the output is not standardised."""
    build = getattr(fl.models, name)
    x = jax.random.gamma(jax.random.key(3), 2.0, (512, 3)) * jnp.array([1.0, 4.0, 0.3]) + 5.0
    outs = {}
    for on in (False, True):
        flow = build(3, 2, (8,), actnorm=on)
        params = jax.jit(lambda k, b, f=flow: fl.data_init(f, k, b))(jax.random.key(0), x)
        outs[on] = jax.jit(jax.vmap(lambda v, f=flow, p=params: f.transform.apply(p, v)[0]))(x)
    chex.assert_trees_all_close(jnp.mean(outs[True], 0), jnp.zeros(3), atol=1e-4)
    chex.assert_trees_all_close(jnp.std(outs[True], 0), jnp.ones(3), atol=1e-3)
    assert float(jnp.max(jnp.abs(jnp.mean(outs[False], 0)))) > 1.0
    flow = build(3, 2, (8,), actnorm=True)
    params = fl.testing.randomize_params(
        jax.random.key(1), fl.data_init(flow, jax.random.key(0), x), 0.1
    )
    z, lp = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, jax.random.key(2), 16)
    chex.assert_trees_all_close(lp, jax.jit(flow.log_prob)(params, z), atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("per_row", [False, True])
def test_data_init_of_a_conditional_flow_sees_the_context(per_row):
    """``fl.data_init`` passes the context (one vector, or one per row) to the conditional layers
    on the way, so each actnorm is set from what really reaches it: the output on the batch is
    standardised. Before the fix it dropped the context and raised "expected a context"."""
    flow = fl.models.maf(3, 2, (16,), context_dim=2, actnorm=True)
    x = jax.random.gamma(jax.random.key(3), 2.0, (256, 3)) * jnp.array([1.0, 4.0, 0.3]) + 5.0
    c = jax.random.normal(jax.random.key(4), (256, 2) if per_row else (2,))
    params = jax.jit(lambda k, b, cc: fl.data_init(flow, k, b, cc))(jax.random.key(0), x, c)
    ctx = c if per_row else jnp.broadcast_to(c, (256, 2))
    z = jax.vmap(lambda v, cc: flow.transform.apply(params, v, context=cc)[0])(x, ctx)
    chex.assert_trees_all_close(jnp.mean(z, 0), jnp.zeros(3), atol=1e-4)
    chex.assert_trees_all_close(jnp.std(z, 0), jnp.ones(3), atol=1e-3)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="permutation must be one of"):
        fl.models.maf(3, 2, permutation="shuffle")
    with pytest.raises(ValueError, match="num_layers"):
        fl.models.realnvp(3, 0)


def test_maf_reaches_entropy_of_correlated_gaussian_8d():
    dim = 8
    mean, cov = _gaussian(jax.random.key(0), dim)
    chol = jnp.linalg.cholesky(cov)
    draw = lambda k, n: mean + jax.random.normal(k, (n, dim)) @ chol.T  # noqa: E731
    train, test = draw(jax.random.key(1), 30_000), draw(jax.random.key(2), 50_000)
    flow = fl.models.maf(dim, 2, (32, 32))
    params = _fit(flow, train, 2000, lr=5e-3, batch_size=512)
    nll = float(-flow.log_prob(params, test).mean())
    assert abs(nll - _entropy(cov)) < 0.05, (nll, _entropy(cov))
    # samples reproduce the mean and covariance within sampling error
    x = flow.sample(params, jax.random.key(3), 20_000)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.06)
    np.testing.assert_allclose(jnp.cov(x.T), cov, atol=0.12)


def test_conditional_maf_reaches_conditional_entropy():
    dim, cdim, n = 2, 3, 10_000
    a = jax.random.normal(jax.random.key(0), (dim, cdim))
    _, cov = _gaussian(jax.random.key(1), dim)
    chol = jnp.linalg.cholesky(cov)
    c = jax.random.normal(jax.random.key(2), (2 * n, cdim))
    x = c @ a.T + jax.random.normal(jax.random.key(3), (2 * n, dim)) @ chol.T
    flow = fl.models.maf(dim, 3, (32, 32), context_dim=cdim)
    params = _fit(flow, x[:n], 1500, lr=5e-3, batch_size=512, context=c[:n])
    nll = float(-flow.log_prob(params, x[n:], c[n:]).mean())
    assert abs(nll - _entropy(cov)) < 0.05, (nll, _entropy(cov))
    # a different context per sample moves the samples with A c
    samples = flow.sample(params, jax.random.key(4), 2, context=jnp.stack([c[0], -c[0]]))
    assert samples.shape == (2, dim)


# Bounds from longer runs on these exact sets (same models and settings, 15,000 steps): MAF reaches
# 2.464 nats, NSF 2.507 (it overfits 5k points without early stopping; its best, at 1,500 steps,
# is 2.417). The 1,500-step test runs must come within ~0.03 of the best seen.
@pytest.mark.parametrize(
    "name, build, bound",
    [
        ("maf", lambda: fl.models.maf(2, 5, (64, 64)), 2.50),
        pytest.param(  # ~21 s of training
            "nsf", lambda: fl.models.nsf(2, 4, (64, 64), 8), 2.45, marks=pytest.mark.slow
        ),
    ],
)
def test_two_moons_held_out_nll(name, build, bound):
    train = two_moons(jax.random.key(0), 5000)
    test = two_moons(jax.random.key(1), 5000)
    flow = build()
    params = _fit(flow, train, 1500, lr=3e-3, batch_size=256)
    nll = float(-flow.log_prob(params, test).mean())
    assert nll < bound, (name, nll)
