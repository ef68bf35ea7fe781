"""The numpyro bridge: a flow as a numpyro distribution, and the flow autoguide for SVI.

The guide is checked on a conjugate model with an exact posterior and an exact log evidence:
a 2-D Gaussian mean (correlated prior) and a Gamma-Poisson rate (a positive site, so numpyro's
unconstraining log enters with its Jacobian).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

numpyro = pytest.importorskip("numpyro")
import numpyro.distributions as dist  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.util import log_density  # noqa: E402

import flowjax_lab as fl  # noqa: E402


def _flow_and_params(dim=2, seed=0):
    flow = fl.models.realnvp(dim=dim, num_layers=2, hidden=(8,))
    params = flow.init(jax.random.key(seed))
    # move the params off the identity so the check is not trivial
    params = jax.tree.map(
        lambda p: p + 0.1 * jnp.sin(jnp.arange(p.size).reshape(p.shape)) if fl.is_trainable(p) else p,
        params,
    )
    return flow, params


def test_to_numpyro_log_prob_sample_and_shapes():
    flow, params = _flow_and_params()
    d = fl.interop.to_numpyro(flow, params)
    assert isinstance(d, dist.Distribution)
    assert d.event_shape == (2,) and d.batch_shape == ()
    assert d.support is dist.constraints.real_vector
    x = jax.random.normal(jax.random.key(1), (3, 4, 2))
    np.testing.assert_allclose(d.log_prob(x), flow.log_prob(params, x), rtol=1e-6)
    s = d.sample(jax.random.key(2), (5, 3))
    assert s.shape == (5, 3, 2)
    np.testing.assert_allclose(s.reshape(15, 2), flow.sample(params, jax.random.key(2), 15), rtol=1e-6)
    assert d.sample(jax.random.key(2)).shape == (2,)
    # the log q cached at sampling (numpyro's intermediates) is the flow's log_prob of the draw
    x, inter = d.sample_with_intermediates(jax.random.key(3), (7,))
    np.testing.assert_allclose(d.log_prob(x, inter), flow.log_prob(params, x), rtol=1e-4, atol=1e-5)
    # a pytree: through jit with the params as data
    lp = jax.jit(lambda dd, v: dd.log_prob(v))(d, x)
    np.testing.assert_allclose(lp, flow.log_prob(params, x), rtol=1e-6)


def test_to_numpyro_inside_a_model():
    flow, params = _flow_and_params()
    prior = fl.interop.to_numpyro(flow, params)

    def model():
        theta = numpyro.sample("theta", prior)
        numpyro.sample("y", dist.Normal(theta.sum(), 1.0), obs=0.3)

    theta = jnp.array([0.2, -0.5])
    lp, _ = log_density(model, (), {}, {"theta": theta})
    expected = flow.log_prob(params, theta) + dist.Normal(theta.sum(), 1.0).log_prob(0.3)
    np.testing.assert_allclose(lp, expected, rtol=1e-6)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    assert trace["theta"]["value"].shape == (2,)


def test_conditional_flow_needs_context():
    flow = fl.models.maf(2, 1, (8,), context_dim=3)
    params = flow.init(jax.random.key(0))
    with pytest.raises(ValueError, match="conditional.*context"):
        fl.interop.to_numpyro(flow, params)
    with pytest.raises(ValueError, match="one vector"):
        fl.interop.to_numpyro(flow, params, context=jnp.ones((4, 3)))
    c = jnp.array([0.5, -1.0, 2.0])
    d = fl.interop.to_numpyro(flow, params, context=c)
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(d.log_prob(x), flow.log_prob(params, x, c), rtol=1e-6)
    assert d.sample(jax.random.key(0), (4,)).shape == (4, 2)


def test_missing_numpyro_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpyro", None)
    monkeypatch.delitem(sys.modules, "flowjax_lab.interop_numpyro", raising=False)
    monkeypatch.delattr(fl, "interop_numpyro", raising=False)
    flow, params = _flow_and_params()
    with pytest.raises(ImportError, match=r"flowjax_lab\[numpyro\]"):
        fl.interop.to_numpyro(flow, params)


def test_import_flowjax_lab_does_not_import_numpyro():
    import subprocess

    code = "import sys, flowjax_lab; print('numpyro' in sys.modules, 'blackjax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- the flow guide

S0 = jnp.array([[1.0, 0.6], [0.6, 1.0]])
SIGMA = 0.5
A, B = 3.0, 1.0  # Gamma(shape A, rate B) prior on the Poisson rate


def _data():
    y = jax.random.normal(jax.random.key(3), (5, 2)) * SIGMA + jnp.array([0.7, -0.4])
    counts = jnp.array([2.0, 4.0, 3.0, 1.0, 5.0, 2.0, 3.0, 4.0, 2.0, 3.0])
    return y, counts


def _model(y, counts):
    mu = numpyro.sample("mu", dist.MultivariateNormal(jnp.zeros(2), S0))
    lam = numpyro.sample("lam", dist.Gamma(A, B))
    with numpyro.plate("rows", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, SIGMA).to_event(1), obs=y)
    with numpyro.plate("counts", counts.shape[0]):
        numpyro.sample("c", dist.Poisson(lam), obs=counts)


def _exact(y, counts):
    """Posterior mean/cov of mu, posterior Gamma of lam, and the log evidence (by Bayes' rule
    at one point: log p(y) = log p(y | t) + log p(t) - log p(t | y), exact for any t)."""
    prec = jnp.linalg.inv(S0) + y.shape[0] / SIGMA**2 * jnp.eye(2)
    cov = jnp.linalg.inv(prec)
    mean = cov @ (y.sum(0) / SIGMA**2)
    a, b = A + counts.sum(), B + counts.shape[0]
    mu0, lam0 = jnp.zeros(2), 2.0
    log_z = (
        dist.MultivariateNormal(jnp.zeros(2), S0).log_prob(mu0)
        + dist.Normal(mu0, SIGMA).log_prob(y).sum()
        - dist.MultivariateNormal(mean, cov).log_prob(mu0)
        + dist.Gamma(A, B).log_prob(lam0)
        + dist.Poisson(lam0).log_prob(counts).sum()
        - dist.Gamma(a, b).log_prob(lam0)
    )
    return mean, cov, (a, b), float(log_z)


@pytest.mark.slow  # ~18 s of SVI
def test_flow_guide_fits_a_conjugate_posterior():
    y, counts = _data()
    mean, cov, (a, b), log_z = _exact(y, counts)
    # x = shift + scale * T^-1 z: every Gaussian (a lower-triangular Cholesky factor)
    flow = fl.make_flow(fl.chain(fl.transforms.affine(), fl.transforms.triangular()),
                        event_shape=(3,))  # fmt: skip
    guide = fl.interop.flow_guide(flow, _model)
    optimizer = optax.adam(optax.cosine_decay_schedule(3e-2, 600))
    svi = SVI(_model, guide, numpyro.optim.optax_to_numpyro(optimizer), Trace_ELBO(num_particles=8))
    result = svi.run(jax.random.key(0), 600, y, counts, progress_bar=False)
    assert set(result.params) == {"auto_flow"}
    draws = guide.sample_posterior(jax.random.key(1), result.params, sample_shape=(10000,))
    mu, lam = draws["mu"], draws["lam"]
    assert mu.shape == (10000, 2) and lam.shape == (10000,) and bool(jnp.all(lam > 0))
    sd = jnp.sqrt(jnp.diag(cov))  # 0.216 each
    # tolerances: 0.15 posterior sd on the means (SVI noise ~0.03 sd, MC 0.01 sd), 8% on sds
    np.testing.assert_allclose(mu.mean(0), mean, atol=0.15 * float(sd[0]))
    np.testing.assert_allclose(mu.std(0), sd, rtol=0.08)
    np.testing.assert_allclose(lam.mean(), a / b, rtol=0.03)  # 2.91
    np.testing.assert_allclose(lam.std(), jnp.sqrt(a) / b, rtol=0.08)  # 0.51
    # ELBO = log Z - KL(q || p): the Gaussian part is exact for a linear flow, the log-Gamma
    # part is nearly Gaussian (shape 32: KL ~ 1e-3); the 2000-particle estimate has SE ~ 0.003
    elbo_loss = Trace_ELBO(num_particles=2000).loss
    elbo = -jax.jit(lambda p: elbo_loss(jax.random.key(2), p, _model, guide, y, counts))(
        result.params
    )
    assert log_z - 0.03 < float(elbo) < log_z + 0.01, (float(elbo), log_z)
    # the fitted flow's params in fl form, and the posterior over the unconstrained latents
    flow_params = guide.flow_params(result.params)
    assert jax.tree.structure(flow_params) == jax.tree.structure(flow.init(jax.random.key(0)))
    u = jnp.concatenate([mean, jnp.log(jnp.array([a / b]))])
    assert np.isfinite(float(guide.get_posterior(result.params).log_prob(u)))


def test_flow_guide_checks_the_dimension():
    y, counts = _data()
    guide = fl.interop.flow_guide(fl.models.linear_flow(2), _model)  # the model has 3
    with pytest.raises(ValueError, match=r"3 unconstrained latent numbers.*\(3,\)"):
        numpyro.handlers.seed(guide, 0)(y, counts)


def test_flow_guide_keeps_integer_leaves_out_of_numpyro_params():
    # a random permutation is stored as int32 indices: fixed structure, never a numpyro param
    # (jax.grad would refuse it); SVI trains the float leaves and the indices come back unchanged
    y, counts = _data()
    flow = fl.models.iaf(3, 2, (8,), permutation="random")
    params = flow.init(jax.random.key(5))
    guide = fl.interop.flow_guide(flow, _model, params)
    svi = SVI(_model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
    result = svi.run(jax.random.key(0), 20, y, counts, progress_bar=False)
    numpyro_leaves = jax.tree.leaves(result.params["auto_flow"])
    assert numpyro_leaves and all(fl.is_trainable(a) for a in numpyro_leaves)
    fitted = guide.flow_params(result.params)
    ints = [a for a in jax.tree.leaves(params) if not fl.is_trainable(a)]
    assert len(ints) == 2
    for before, after in zip(ints, [a for a in jax.tree.leaves(fitted) if not fl.is_trainable(a)]):
        np.testing.assert_array_equal(before, after)
    assert np.all(np.isfinite(result.losses))
    floats_before = [a for a in jax.tree.leaves(params) if fl.is_trainable(a)]
    floats_after = [a for a in jax.tree.leaves(fitted) if fl.is_trainable(a)]
    assert any(not np.allclose(a, b) for a, b in zip(floats_before, floats_after))  # trained


def test_flow_guide_quantiles_and_median_are_the_flows_marginals():
    # an elementwise affine flow off the identity: u_i = shift_i + exp(log_scale_i) z_i, so the
    # p-quantile of u_i is g(Phi^-1(p))_i exactly; mu = u[:2], lam = exp(u[2]) (monotone maps
    # keep quantiles). Monte Carlo at 8192 draws: SE ~0.015 scale units at these p.
    y, counts = _data()
    flow = fl.make_flow(fl.transforms.affine(), event_shape=(3,))
    params = {"shift": jnp.array([0.3, -0.5, 1.0]), "log_scale": jnp.array([-0.7, 0.2, -1.5])}
    guide = fl.interop.flow_guide(flow, _model, params)
    numpyro.handlers.seed(guide, 0)(y, counts)  # the prototype trace
    svi_params = {"auto_flow": params}
    p = jnp.array([0.1, 0.5, 0.9])
    exact = jax.vmap(lambda z: flow.transform.inverse(params, z)[0])(
        jax.scipy.special.ndtri(p)[:, None] * jnp.ones(3)
    )
    q = guide.quantiles(svi_params, p)
    assert q["mu"].shape == (3, 2) and q["lam"].shape == (3,)
    scale = jnp.exp(params["log_scale"])
    np.testing.assert_allclose(q["mu"], exact[:, :2], atol=float(0.05 * scale[:2].max()))
    np.testing.assert_allclose(jnp.log(q["lam"]), exact[:, 2], atol=float(0.05 * scale[2]))
    med = guide.median(svi_params)
    np.testing.assert_allclose(med["mu"], params["shift"][:2], atol=0.05)
    np.testing.assert_allclose(med["lam"], jnp.exp(params["shift"][2]), rtol=0.02)
    # repeatable (fixed default key), another key gives other draws
    np.testing.assert_array_equal(guide.quantiles(svi_params, p)["mu"], q["mu"])
    other = guide.quantiles(svi_params, p, key=jax.random.key(1))["mu"]
    assert not np.array_equal(other, q["mu"])
    with pytest.raises(ValueError, match="num_samples"):
        guide.quantiles(svi_params, p, num_samples=0)
