"""fl.transforms.cnf / fl.models.cnf: analytic checks on a linear field, errors, RNODE terms,
training; the float64 checks (log-det vs jacfwd, Hutchinson's mean, backsolve gradients) run in
their own process (x64_cnf.py)."""

import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowjax_lab as fl
from x64_launcher import run_pytest_in_float64

T = fl.transforms


class LinearField(nn.Module):
    """v(z, t) = A z: the time-1 map is expm(A) x, log|det| = tr A, ||dv/dz||_F^2 = ||A||_F^2."""

    out: int | None = None  # a wrong output size, for the shape check

    @nn.compact
    def __call__(self, z, t, context=None):
        a = self.param("a", lambda k: jnp.array([[0.3, -0.8], [0.5, -0.2]], z.dtype))
        v = a @ z
        return v if self.out is None else jnp.zeros(self.out, z.dtype)


def test_linear_field_matches_the_closed_form():
    t = T.cnf(vector_field=LinearField(), rtol=1e-7, atol=1e-7)
    p = t.init(jax.random.key(0), jnp.zeros(2))
    a = p["params"]["a"]
    x = jnp.array([0.7, -1.2])

    @jax.jit
    def run(p, x):
        sol = T.cnf_solve(t, p, x)
        return sol, t.apply(p, x), T.cnf_solve(t, p, sol.y, direction="inverse")

    sol, (z, ld), back = run(p, x)
    np.testing.assert_allclose(sol.y, jax.scipy.linalg.expm(a) @ x, atol=2e-5)
    np.testing.assert_allclose(sol.logdet, jnp.trace(a), atol=2e-5)  # 0.1
    np.testing.assert_allclose(sol.frobenius, jnp.sum(a * a), rtol=2e-5)
    nodes, weights = np.polynomial.legendre.leggauss(20)  # int_0^1 |A expm(tA) x|^2 dt
    ts = 0.5 * (nodes + 1.0)
    speed = [float(jnp.sum((a @ jax.scipy.linalg.expm(s * a) @ x) ** 2)) for s in ts]
    np.testing.assert_allclose(sol.kinetic, 0.5 * np.dot(weights, speed), rtol=2e-5)
    assert 1 <= int(sol.num_steps) < 100 and int(sol.num_accepted_steps) <= int(sol.num_steps)
    np.testing.assert_allclose(z, sol.y, atol=2e-5)
    np.testing.assert_allclose(ld, sol.logdet, atol=2e-5)
    np.testing.assert_allclose(back.y, x, atol=2e-5)
    np.testing.assert_allclose(back.logdet, -jnp.trace(a), atol=2e-5)


def test_constant_steps_take_that_many():
    t = T.cnf(vector_field=LinearField(), steps=7)
    p = t.init(jax.random.key(0), jnp.zeros(2))
    sol = T.cnf_solve(t, p, jnp.ones(2))
    assert int(sol.num_steps) == 7
    np.testing.assert_allclose(sol.logdet, 0.1, atol=1e-5)  # tr A is constant: exact


def test_max_steps_too_small_is_an_error_naming_it():
    t = T.cnf((8,), max_steps=2, rtol=1e-8, atol=1e-8)
    p = fl.testing.randomize_params(jax.random.key(1), t.init(jax.random.key(0), jnp.zeros(2)))
    x = jnp.array([0.3, -0.7])
    with pytest.raises(RuntimeError, match="max_steps=2"):
        jax.block_until_ready(t.apply(p, x))
    with pytest.raises(RuntimeError, match="max_steps=2"):  # under jit and vmap too
        jax.block_until_ready(jax.jit(jax.vmap(lambda x: t.apply(p, x)))(jnp.stack([x, x])))
    flagged = T.cnf((8,), max_steps=2, rtol=1e-8, atol=1e-8, on_failure="nan")
    z, ld = jax.jit(flagged.apply)(p, x)
    assert bool(jnp.all(jnp.isnan(z))) and bool(jnp.isnan(ld))
    enough = T.cnf((8,), max_steps=2, steps=2)  # 2 constant steps fit in the budget
    assert bool(jnp.isfinite(enough.apply(p, x)[1]))


def test_wrong_vector_field_shape_is_a_value_error():
    t = T.cnf(vector_field=LinearField(out=3))
    with pytest.raises(ValueError, match=r"returned shape \(3,\) for an event of shape \(2,\)"):
        t.init(jax.random.key(0), jnp.zeros(2))


def test_hutchinson_without_key_is_a_value_error():
    t = T.cnf((8,), trace="hutchinson")
    p = t.init(jax.random.key(0), jnp.zeros(2))
    with pytest.raises(ValueError, match="trace='hutchinson' needs a random key"):
        t.apply(p, jnp.ones(2))
    with pytest.raises(ValueError, match="needs a random key"):
        t.inverse(p, jnp.ones(2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"trace": "stochastic"}, "trace must be one of"),
        ({"probe": "uniform"}, "probe must be one of"),
        ({"adjoint": "implicit"}, "adjoint must be one of"),
        ({"activation": "relu"}, "activation must be one of"),
        ({"rtol": 0.0}, "rtol must be > 0"),
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"on_failure": "ignore"}, "on_failure must be one of"),
    ],
)
def test_bad_options_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        T.cnf((8,), **kwargs)


def test_context_is_checked():
    t = T.cnf((8,), context_dim=2)
    p = t.init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"expected a context of shape \(2,\), got None"):
        t.apply(p, jnp.ones(3))


def test_missing_diffrax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffrax", None)  # import diffrax now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "flowjax_lab\[cnf\]"'):
        T.cnf((8,))


def test_cnf_solve_needs_a_cnf():
    with pytest.raises(ValueError, match="made by fl.transforms.cnf"):
        T.cnf_solve(T.affine(), {}, jnp.ones(2))


@pytest.mark.slow  # ~12 s
def test_rnode_loss_adds_the_weighted_integrals_to_the_nll():
    flow = fl.models.cnf(2, (8,), rtol=1e-6, atol=1e-6)
    p = fl.testing.randomize_params(jax.random.key(1), flow.init(jax.random.key(0)), 0.5)
    x = jax.random.normal(jax.random.key(2), (4, 2))
    plain = T.rnode_loss(flow.transform, flow.base.log_prob, kinetic=0.0, frobenius=0.0)
    reg = T.rnode_loss(flow.transform, flow.base.log_prob, kinetic=0.1, frobenius=0.2)

    @jax.jit
    def run(p, x):
        sols = jax.vmap(lambda xi: T.cnf_solve(flow.transform, p, xi))(x)
        return plain(p, x), fl.forward_kl(flow)(p, x), reg(p, x), sols

    nll, mle, regularised, sols = run(p, x)
    np.testing.assert_allclose(nll, mle, rtol=1e-5)
    want = nll + 0.1 * jnp.mean(sols.kinetic) + 0.2 * jnp.mean(sols.frobenius)
    assert float(jnp.mean(sols.kinetic)) > 0.01 and float(jnp.mean(sols.frobenius)) > 0.01
    np.testing.assert_allclose(regularised, want, rtol=1e-5)


def _banana(key, n):
    """z1 ~ N(0, 4), z2 = (z1^2 - 4) / 4 + N(0, 1/4): entropy log(2 pi e) = 2.838 nats."""
    k1, k2 = jax.random.split(key)
    z1 = 2.0 * jax.random.normal(k1, (n,))
    return jnp.stack([z1, 0.25 * (z1**2 - 4.0) + 0.5 * jax.random.normal(k2, (n,))], axis=1)


@pytest.mark.slow
def test_fit_trains_a_tiny_cnf_by_mle():
    """~25 s of CPU (200 steps of adaptive solves with their gradients)."""
    data, test = _banana(jax.random.key(0), 2048), _banana(jax.random.key(1), 2048)
    flow = fl.models.cnf(2, (16, 16), rtol=1e-3, atol=1e-3)
    params = flow.init(jax.random.key(2))
    before = -float(jnp.mean(flow.log_prob(params, test)))
    result = fl.fit(jax.random.key(3), flow, params, data=data, steps=200, batch_size=128,
                    optimizer=optax.adam(1e-2), progress=False)  # fmt: skip
    after = -float(jnp.mean(flow.log_prob(result.params, test)))
    assert before > 4.8  # N(0, I) on the banana: 4.9 nats
    assert after < 3.1, after  # entropy 2.838: within 0.26 nats (measured 2.90 at 300 steps)


@pytest.mark.slow
def test_fit_with_the_rnode_term_shortens_the_paths():
    """objective {"mle": 1, "rnode": 0.1} against "mle" alone, same keys and steps: the
    regularised CNF's kinetic energy and solver steps on the data drop (measured 2.87 -> 1.80
    and 4.18 -> 3.68 steps at 150 steps; here 100), the history logs the term, and the NLL
    stays close (measured 2.98 -> 3.06). ~2 minutes of CPU."""
    data = _banana(jax.random.key(0), 2048)
    flow = fl.models.cnf(2, (16, 16), rtol=1e-3, atol=1e-3)
    out = {}
    for name, objective in (("mle", "mle"), ("rnode", {"mle": 1.0, "rnode": 0.1})):
        result = fl.fit(jax.random.key(1), flow, flow.init(jax.random.key(2)),
                        objective=objective, data=data, steps=100, batch_size=128,
                        optimizer=fl.default_optimizer(100, 1e-2), progress=False)  # fmt: skip
        sols = jax.vmap(lambda x, p=result.params: T.cnf_solve(flow.transform, p, x))(data[:256])
        nll = -float(jnp.mean(flow.log_prob(result.params, data[:512])))
        nfe = float(np.mean(result.history["nfe"][-20:]))
        out[name] = (float(jnp.mean(sols.kinetic)), float(jnp.mean(sols.num_steps)), nll, nfe)
        assert ("loss_rnode" in result.history) == (name == "rnode")
    assert out["rnode"][0] < 0.85 * out["mle"][0], out
    assert out["rnode"][1] <= out["mle"][1], out
    assert out["rnode"][2] < out["mle"][2] + 0.3, out
    # the history's evaluations (the "mle" term's density solves) drop with the paths
    assert out["rnode"][3] < out["mle"][3], out


@pytest.mark.parametrize(
    "base", [None, pytest.param("diagonal_normal", marks=pytest.mark.slow)]  # ~15 s
)
def test_fit_history_counts_the_field_evaluations(base):
    """fl.fit's history gains "nfe" for a CNF: per step, the mean over the batch rows of
    1 + 6 num_steps (Tsit5, first same as last) of the density solves, which are flow.log_prob's
    own (loss_mle equals the NLL of those rows); flows without a solver have no "nfe". With a
    trainable base the objective adds "rnode" (its solve reads the flow's {"transform", "base"})."""
    data = _banana(jax.random.key(0), 256)
    flow = fl.models.cnf(2, (8,), rtol=1e-3, atol=1e-3, base=base)
    params = jax.tree.map(  # off the identity (the field starts at zero)
        lambda p: p + 0.3 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
        flow.init(jax.random.key(1)),
    )
    objective = "mle" if base is None else {"mle": 1.0, "rnode": 0.1}
    result = fl.fit(jax.random.key(2), flow, params, objective=objective, data=data, steps=3,
                    batch_size=256, optimizer=optax.sgd(0.0), progress=False)  # fmt: skip
    sols = jax.vmap(lambda x: T.cnf_solve(flow.transform, params, x))(data)
    if base is not None:
        penalty = float(jnp.mean(sols.kinetic + sols.frobenius))
        assert penalty > 0.01, penalty
        np.testing.assert_allclose(result.history["loss_rnode"], penalty, rtol=1e-5)
    nfe = result.history["nfe"]
    chex.assert_trees_all_close(sols.num_evaluations, 1.0 + 6.0 * sols.num_steps)
    assert nfe.shape == (3,) and np.all(nfe >= 7.0), nfe
    # the augmented RNODE solve takes slightly different steps: close, not equal
    assert abs(float(nfe[0]) - float(jnp.mean(sols.num_evaluations))) < 6.0, nfe
    nll = -float(jnp.mean(flow.log_prob(params, data)))
    np.testing.assert_allclose(result.history["loss_mle"], nll, rtol=1e-5)
    plain = fl.models.maf(2, 1, (8,))
    other = fl.fit(jax.random.key(2), plain, plain.init(jax.random.key(1)), data=data, steps=2,
                   batch_size=64, progress=False)  # fmt: skip
    assert "nfe" not in other.history


@pytest.mark.slow  # ~20 s
def test_fit_trains_a_hutchinson_cnf_with_the_step_keys():
    """A CNF with trace="hutchinson" trains by fl.fit's "mle": each row's solve draws its probe
    from the step key; the exact-trace NLL of the result drops (measured 5.19 -> 3.14 nats at
    100 steps, entropy 2.838)."""
    data = _banana(jax.random.key(0), 2048)
    layer = T.cnf((16, 16), trace="hutchinson", rtol=1e-3, atol=1e-3)
    flow = fl.make_flow(layer, fl.standard_normal((2,)))
    exact = fl.make_flow(T.cnf((16, 16), rtol=1e-3, atol=1e-3), fl.standard_normal((2,)))
    params = flow.init(jax.random.key(1))
    result = fl.fit(jax.random.key(2), flow, params, data=data, steps=100, batch_size=128,
                    optimizer=optax.adam(1e-2), progress=False)  # fmt: skip
    before = -float(jnp.mean(exact.log_prob(params, data)))
    after = -float(jnp.mean(exact.log_prob(result.params, data)))
    assert before > 4.8 and after < 3.4, (before, after)
    assert np.all(np.isfinite(result.history["nfe"]))


def test_rnode_objective_needs_a_continuous_flow():
    flow = fl.models.maf(2, 1, (8,))
    with pytest.raises(ValueError, match="objective 'rnode'.*fl.models.cnf"):
        fl.fit(jax.random.key(0), flow, flow.init(jax.random.key(1)),
               objective={"mle": 1.0, "rnode": 0.1}, data=np.zeros((64, 2), np.float32),
               steps=2, progress=False)  # fmt: skip


@pytest.mark.slow
def test_cnf_in_float64_in_own_process():
    """Runs ``x64_cnf.py`` with JAX_ENABLE_X64=1 (~90 s: adaptive solves compile slowly)."""
    run_pytest_in_float64("x64_cnf.py", passed=5)
