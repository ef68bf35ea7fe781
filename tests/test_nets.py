"""Tests for flowjax_lab.nets: the MADE autoregressive property, identity start, MLP, dtypes.

Speed: every check runs as one jitted program (or only traces, via ``jax.eval_shape``), since on
a small CPU the cost is the number of XLA compiles, not the arithmetic.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_lab.nets import MADE, MLP, made_degrees, made_masks, made_sequential_solve

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = jax.random.key(0)
# Tests compile many tiny programs: skip LLVM's expensive passes (halves compile time).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


def shapes_of(module, *args):
    """Param shapes and dtypes of ``module.init(key, *args)`` (trace only, no compile)."""
    return jax.eval_shape(module.init, KEY, *args)


def random_params(module, *args, seed=0, scale=0.5):
    """Params shaped like ``module.init(key, *args)``, every leaf (output layers too) random.

    Leaves are scale * N(0, 1) from a seeded numpy generator: deterministic, no compile.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
        shapes_of(module, *args),
    )


def jacobian(module, params, *args, argnum=0):
    """Jitted ``jacfwd`` of ``module.apply(params, *args)`` wrt ``args[argnum]``."""
    fn = jax.jacfwd(lambda p, *a: module.apply(p, *a), argnums=argnum + 1)
    return jit(fn)(params, *args)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def make_order(kind, d):
    """(order argument for MADE, degree array) for the identity or a fixed random order."""
    if kind == "identity":
        return None, np.arange(d)
    perm = np.random.default_rng(100 + d).permutation(d)
    return tuple(int(v) for v in perm), perm


@pytest.mark.parametrize(
    "order_kind,activation",
    [("identity", nn.relu), ("random", nn.relu), ("random", nn.tanh)],
    ids=["identity-relu", "random-relu", "random-tanh"],
)
@pytest.mark.parametrize("hidden", [(16,), (12, 12)], ids=["h16", "h12x12"])
@pytest.mark.parametrize("d", [1, 2, 5, 8])
def test_made_jacobian_is_autoregressive(d, hidden, order_kind, activation):
    """d y[i, k] / d x[j] == 0 exactly unless order[j] < order[i]; nonzero somewhere allowed.

    Also pins the layout y[i, k] (dimension i, param k): a [k, i] layout would break the mask.
    """
    num_params = 3
    order, degrees = make_order(order_kind, d)
    made = MADE(hidden=hidden, num_params=num_params, order=order, activation=activation)
    x = normal(1, (d,))
    params = random_params(made, x, seed=2)

    jac = np.asarray(jacobian(made, params, x))  # [i, k, j] = d y[i, k] / d x[j]
    chex.assert_shape(jac, (d, num_params, d))
    allowed = degrees[None, :] < degrees[:, None]  # [i, j]: x[j] comes before x[i]
    allowed_ikj = np.broadcast_to(allowed[:, None, :], jac.shape)
    chex.assert_trees_all_equal(np.where(allowed_ikj, 0.0, jac), np.zeros_like(jac))
    if d > 1:
        assert np.any(jac[allowed_ikj] != 0), "Jacobian is zero everywhere it may be nonzero"
    if activation is nn.tanh and min(hidden) >= d - 1:
        # Smooth activation and every degree present: every allowed (i, j) is connected.
        np.testing.assert_array_equal(np.any(jac != 0, axis=1), allowed)


@pytest.mark.parametrize("d,hidden", [(1, (3,)), (4, (3, 5)), (6, (5,)), (7, (2,))])
def test_made_masks_reachability(d, hidden):
    """Product of the masks: input j reaches output (i, k) only if order[j] < order[i]."""
    order = tuple(int(v) for v in np.random.default_rng(d).permutation(d))
    num_params = 2
    reach = np.eye(d)
    for mask in made_masks(d, hidden, num_params, order):
        reach = reach @ mask
    reach = reach.reshape(d, d, num_params)  # [j, i, k]
    deg = np.asarray(order)
    allowed = deg[:, None] < deg[None, :]  # [j, i]
    assert not np.any(reach[~allowed])
    if min(hidden) >= d - 1:
        assert np.all(reach[allowed] > 0)
    degrees = made_degrees(d, hidden, order)
    np.testing.assert_array_equal(degrees[0], deg + 1)
    for deg_h, width in zip(degrees[1:], hidden, strict=True):
        assert deg_h.shape == (width,)
        assert deg_h.min() >= min(1, d - 1) and deg_h.max() <= max(1, d - 1)


@pytest.mark.parametrize("d", [1, 4])
def test_made_context_reaches_every_output(d):
    context_dim, num_params = 3, 2
    made = MADE(hidden=(8, 8), num_params=num_params, context_dim=context_dim)
    x, c = normal(1, (d,)), normal(2, (context_dim,))
    params = random_params(made, x, c, seed=3)

    @jit
    def jacobians(p, x, c):
        return jax.jacfwd(lambda v, ctx: made.apply(p, v, ctx), argnums=(0, 1))(x, c)

    jac_x, jac_c = jax.tree.map(np.asarray, jacobians(params, x, c))
    chex.assert_shape(jac_c, (d, num_params, context_dim))
    assert np.all(np.any(jac_c != 0, axis=(1, 2))), "some output ignores context"
    upper = np.triu(np.ones((d, d), bool))[:, None, :]  # j >= i forbidden (identity order)
    assert not np.any(jac_x[np.broadcast_to(upper, jac_x.shape)])


@pytest.mark.parametrize(
    "d,hidden,context_dim",
    [(1, (4,), 2), (2, (), 0), (5, (7, 9), 0), (7, (16, 16), 3), (9, (3, 5), 0), (6, (5,), 1)],
    ids=["d1-context", "d2-no-hidden", "d5", "d7-context", "d9-narrow", "d6-one-per-degree"],
)
def test_made_sequential_solve_inverts_the_full_made(d, hidden, context_dim):
    """x from the step-by-step solve reproduces z through the full MADE: z_i = (x_i - mu_i(x))
    exp(-s_i(x)), random order, also when layers are narrower than d - 1 (degrees with no unit).
    The summed log-det is -sum s_i at that x."""
    order, _ = make_order("random", d)
    made = MADE(hidden=hidden, num_params=2, order=order, context_dim=context_dim)
    z = normal(d, (d,))
    c = normal(50 + d, (context_dim,)) if context_dim else None
    params = random_params(made, z, c, seed=d)

    def solve_one(z_i, theta_i):
        return z_i * jnp.exp(theta_i[:, 1]) + theta_i[:, 0], theta_i[:, 1]

    def check(p):
        x, log_det = made_sequential_solve(made, p["params"], z, c, solve_one)
        theta = made.apply(p, x, c)
        return (x - theta[:, 0]) * jnp.exp(-theta[:, 1]), log_det, jnp.sum(theta[:, 1])

    z_back, log_det, want = jit(check)(params)
    chex.assert_trees_all_close(z_back, z, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(log_det, want, rtol=1e-5, atol=1e-5)


def test_made_argument_errors():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="context_dim=2"):
        shapes_of(MADE(hidden=(4,), num_params=2, context_dim=2), x)
    with pytest.raises(ValueError, match="context_dim=0"):
        shapes_of(MADE(hidden=(4,), num_params=2), x, jnp.zeros(2))
    with pytest.raises(ValueError, match="length 2"):
        shapes_of(MADE(hidden=(4,), num_params=2, context_dim=2), x, jnp.zeros(5))
    with pytest.raises(ValueError, match="permutation"):
        shapes_of(MADE(hidden=(4,), num_params=2, order=(0, 0, 1)), x)
    with pytest.raises(ValueError, match="num_params"):
        shapes_of(MADE(hidden=(4,), num_params=0), x)


@pytest.mark.parametrize("context_dim", [0, 2])
def test_made_zero_at_init_single_and_batch(context_dim):
    d, num_params, n = 5, 4, 3
    made = MADE(hidden=(8,), num_params=num_params, context_dim=context_dim)
    c = jnp.ones((context_dim,)) if context_dim else None

    @jit
    def outputs(x):
        params = made.init(KEY, x[0], c)
        return made.apply(params, x[0], c), made.apply(params, x, c)

    y1, yn = jax.tree.map(np.asarray, outputs(normal(1, (n, d))))
    chex.assert_shape(y1, (d, num_params))
    chex.assert_shape(yn, (n, d, num_params))
    chex.assert_trees_all_equal(yn, np.zeros((n, d, num_params), np.float32))


def test_made_batch_matches_vmap_and_out_init_scale():
    d, n = 4, 6
    made = MADE(hidden=(8, 8), num_params=2, context_dim=2, out_init_scale=1e-2)

    @jit
    def outputs(x, c):
        params = made.init(KEY, x[0], c[0])
        per_event = jax.vmap(lambda v, ctx: made.apply(params, v, ctx))(x, c)
        return made.apply(params, x, c), per_event

    y, y_vmap = jax.tree.map(np.asarray, outputs(normal(1, (n, d)), normal(2, (n, 2))))
    assert np.any(y != 0) and np.max(np.abs(y)) < 1.0  # small but not zero
    chex.assert_trees_all_close(y, y_vmap, rtol=1e-5, atol=1e-6)


def test_mlp_shape_and_zero_init():
    x_dim, c_dim, out_dim, n = 3, 2, 5, 4
    net = MLP(hidden=(8, 8), out_dim=out_dim)

    @jit
    def outputs(x, xs, c):
        params = net.init(KEY, x)
        params_c = net.init(KEY, x, c)
        return net.apply(params, x), net.apply(params, xs), net.apply(params_c, xs, c)

    y, ys, ys_c = outputs(normal(1, (x_dim,)), normal(2, (n, x_dim)), normal(3, (c_dim,)))
    zeros = np.zeros((n, out_dim), np.float32)
    chex.assert_trees_all_equal(
        jax.tree.map(np.asarray, (y, ys, ys_c)), (zeros[0], zeros, zeros)
    )  # unbatched c broadcast over n


def test_mlp_context_is_concatenated():
    x_dim, c_dim, out_dim = 3, 2, 5
    net = MLP(hidden=(8, 8), out_dim=out_dim, activation=nn.gelu)
    x, c = normal(1, (x_dim,)), normal(2, (c_dim,))
    params = random_params(net, x, c, seed=3)
    chex.assert_shape(params["params"]["hidden_0"]["kernel"], (x_dim + c_dim, 8))

    @jit
    def outputs(p, x, c):
        jac_c = jax.jacfwd(lambda ctx: net.apply(p, x, ctx))(c)
        return jac_c, net.apply(p, x, c), net.apply(p, jnp.concatenate([x, c]))

    jac_c, y, y_concat = jax.tree.map(np.asarray, outputs(params, x, c))
    chex.assert_shape(jac_c, (out_dim, c_dim))
    assert np.any(jac_c != 0)
    chex.assert_trees_all_close(y, y_concat)


def test_mlp_out_init_scale():
    net = MLP(hidden=(8,), out_dim=2, activation=nn.gelu, out_init_scale=1e-3)
    y = np.asarray(jit(lambda x: net.apply(net.init(KEY, x), x))(jnp.ones(3)))
    assert np.any(y != 0) and np.max(np.abs(y)) < 0.1


def test_float32_params_by_default():
    x = jnp.zeros(3, jnp.float32)
    made_params = shapes_of(MADE(hidden=(4,), num_params=2, context_dim=1), x, jnp.zeros(1))
    mlp_params = shapes_of(MLP(hidden=(4,), out_dim=2), x)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves((made_params, mlp_params))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_float64_params_in_subprocess():
    """x64 is process-wide, so this runs in a fresh interpreter with JAX_ENABLE_X64=1."""
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from flowjax_lab.nets import MADE, MLP
        key = jax.random.key(0)
        x, c = jnp.zeros(3, jnp.float64), jnp.zeros(2, jnp.float64)
        made = MADE(hidden=(4, 4), num_params=2, context_dim=2)
        mlp = MLP(hidden=(4,), out_dim=2)
        p = jax.eval_shape(made.init, key, x, c)
        q = jax.eval_shape(mlp.init, key, x, c)
        dtypes = {leaf.dtype for leaf in jax.tree.leaves((p, q))}
        assert dtypes == {jnp.dtype(jnp.float64)}, dtypes
        assert jax.eval_shape(made.apply, p, x, c).dtype == jnp.float64
        assert jax.eval_shape(mlp.apply, q, x, c).dtype == jnp.float64
        print("ok")
        """
    )
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu", "PYTHONPATH": pythonpath}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
