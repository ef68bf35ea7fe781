"""Glow as published: random-rotation inits of the channel mixings, Glow's coupling scales, the
image preprocessing options and sampling at a temperature."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax_lab as fl
from flowjax_lab import transforms as T


def _matrix_of(t, params, shape):
    """The C x C channel-mixing matrix of a per-pixel linear layer, from its Jacobian at pixel 0."""
    x = jnp.zeros(shape)
    jac = jax.jacfwd(lambda v: t.apply(params, v)[0])(x)  # (H, W, C, H, W, C)
    return jac[0, 0, :, 0, 0, :]


@pytest.mark.parametrize(
    "make", [T.conv1x1, lambda: T.conv1x1(lu=False), lambda: T.emerging_conv(3)],
    ids=["conv1x1_lu", "conv1x1_full", "emerging"],
)  # fmt: skip
def test_mixings_start_at_a_random_orthogonal_matrix(make):
    shape = (3, 3, 6)
    t = make()
    mats = []
    for seed in (0, 1):
        p = jax.jit(t.init)(jax.random.key(seed), jnp.zeros(shape))
        w = _matrix_of(t, p, shape)
        chex.assert_trees_all_close(w @ w.T, jnp.eye(6), atol=1e-5)
        x = jax.random.normal(jax.random.key(9), shape)
        z, logdet = t.apply(p, x)
        chex.assert_trees_all_close(logdet, 0.0, atol=1e-4)
        chex.assert_trees_all_close(jnp.linalg.norm(z), jnp.linalg.norm(x), rtol=1e-5)
        # the map is the same matrix at every pixel: z = x W^T pixelwise (off-centre taps zero)
        chex.assert_trees_all_close(z, x @ w.T, atol=1e-5)
        mats.append(w)
    # different keys, different rotations; far from the identity (which mixes no channels)
    assert float(jnp.abs(mats[0] - mats[1]).max()) > 0.1
    assert float(jnp.abs(mats[0] - jnp.eye(6)).max()) > 0.3


@pytest.mark.parametrize(
    "make", [lambda: T.conv1x1(random_rotation=False), lambda: T.conv1x1(False, random_rotation=False),
             lambda: T.emerging_conv(3, random_rotation=False)],
    ids=["conv1x1_lu", "conv1x1_full", "emerging"],
)  # fmt: skip
def test_random_rotation_false_starts_at_the_identity(make):
    t = make()
    p = t.init(jax.random.key(0), jnp.zeros((2, 2, 4)))
    x = jax.random.normal(jax.random.key(1), (2, 2, 4))
    z, logdet = t.apply(p, x)
    chex.assert_trees_all_close((z, logdet), (x, 0.0), atol=1e-6)


def test_lu_rotation_keeps_permutation_and_signs_fixed_and_reaches_any_sign_pattern():
    t = T.conv1x1()
    found_negative = False
    for seed in range(6):
        p = t.init(jax.random.key(seed), jnp.zeros((1, 1, 5)))
        trainable, fixed = fl.partition(p)
        assert set(k for k, v in fixed.items() if v is not None) == {"perm", "sign"}
        assert sorted(np.asarray(p["perm"]).tolist()) == list(range(5))
        found_negative |= bool(np.any(np.asarray(p["sign"]) < 0))
        # exactly the orthogonal matrix: P L U reproduces it
        w = _matrix_of(t, p, (1, 1, 5))
        chex.assert_trees_all_close(jnp.abs(jnp.linalg.det(w)), 1.0, atol=1e-5)
    # the signs let the LU form start at (and stay near) matrices with negative pivots, which
    # exp(log_diag) alone cannot reach
    assert found_negative
    # gradients flow to L, U and log|s| only; a step of optax leaves perm and sign unchanged
    x = jax.random.normal(jax.random.key(3), (2, 2, 5))
    trainable, fixed = fl.partition(p)
    g = jax.grad(lambda tr: jnp.sum(t.apply(fl.combine(tr, fixed), x)[0] ** 2))(trainable)
    assert g["perm"] is None and g["sign"] is None
    assert float(jnp.abs(g["lower"]).sum()) > 0


def test_lu_linear_rotation_option_and_its_error():
    t = T.lu_linear(random_rotation=True)
    p = t.init(jax.random.key(0), jnp.zeros(4))
    x = jax.random.normal(jax.random.key(1), (4,))
    z, logdet = t.apply(p, x)
    chex.assert_trees_all_close((jnp.linalg.norm(z), logdet), (jnp.linalg.norm(x), 0.0), atol=1e-5)
    with pytest.raises(ValueError, match="permutation= or random_rotation=True, not both"):
        T.lu_linear([1, 0, 2, 3], random_rotation=True)


def test_glow_steps_in_a_stack_start_at_different_rotations():
    flow = fl.models.glow((4, 4, 1), levels=1, steps_per_level=3, hidden_channels=4)
    params = flow.init(jax.random.key(0))
    lowers = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if "'lower'" in jax.tree_util.keystr(path)]  # fmt: skip
    (lower,) = lowers  # the stacked LU factors of the 3 steps' 1x1 convolutions: (3, 4, 4)
    assert lower.shape == (3, 4, 4)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert float(jnp.abs(lower[i] - lower[j]).max()) > 1e-2


def test_glow_coupling_scales():
    x = jax.random.normal(jax.random.key(0), (2, 2, 4))
    sig = T.image_affine_coupling(4, scale="sigmoid")
    p = sig.init(jax.random.key(1), x)
    z, logdet = sig.apply(p, x)
    # zero-initialised last conv: raw = 0, scale sigmoid(2) on the transformed half (2 channels)
    a = jax.nn.sigmoid(2.0)
    chex.assert_trees_all_close(z, jnp.concatenate([x[..., :2], x[..., 2:] * a], -1), atol=1e-6)
    chex.assert_trees_all_close(logdet, 8 * math.log(a), atol=1e-5)
    add = T.image_affine_coupling(4, scale="none")
    p = add.init(jax.random.key(1), x)
    p = fl.testing.randomize_params(jax.random.key(2), p, 0.5)
    z, logdet = add.apply(p, x)
    assert float(logdet) == 0.0 and float(jnp.abs(z - x).max()) > 1e-3
    chex.assert_trees_all_close(z[..., :2], x[..., :2])
    with pytest.raises(ValueError, match=r"scale must be one of \['exp', 'sigmoid', 'none'\]"):
        T.image_affine_coupling(4, scale="tanh")
    with pytest.raises(ValueError, match="coupling must be one of"):
        fl.models.glow_step("nice")


@pytest.mark.parametrize("preprocessing", ["center", "logit"])
def test_glow_preprocessing_counts_its_exact_log_det(preprocessing):
    kw = dict(levels=1, steps_per_level=1, hidden_channels=4)
    plain = fl.models.glow((2, 2, 1), preprocessing=None, **kw)
    pre = fl.models.glow((2, 2, 1), preprocessing=preprocessing, alpha=0.05, **kw)
    params = plain.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (5, 2, 2, 1), minval=0.01, maxval=0.99)
    if preprocessing == "center":
        y, logdet = x - 0.5, 0.0
    else:
        s = 0.05 + 0.9 * x
        y = jnp.log(s) - jnp.log1p(-s)
        logdet = jnp.sum(jnp.log(0.9) - jnp.log(s) - jnp.log1p(-s), axis=(1, 2, 3))
    chex.assert_trees_all_close(
        pre.log_prob(({}, params), x), plain.log_prob(params, y) + logdet, atol=1e-4
    )
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        fl.models.glow((2, 2, 1), preprocessing="scale", **kw)


def test_sample_at_temperature():
    flow = fl.make_flow(fl.chain(T.affine(), T.lu_linear()), event_shape=(3,))
    params = fl.testing.randomize_params(jax.random.key(0), flow.init(jax.random.key(1)), 0.5)
    key = jax.random.key(2)
    chex.assert_trees_all_close(
        fl.sample_at_temperature(flow, params, key, 7, 1.0), flow.sample(params, key, 7)
    )
    z = flow.base.sample(seed=key, sample_shape=(7,))
    want = jax.vmap(lambda v: flow.transform.inverse(params, v)[0])(0.5 * z)
    chex.assert_trees_all_close(fl.sample_at_temperature(flow, params, key, 7, 0.5), want)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            fl.sample_at_temperature(flow, params, key, 7, bad)


def test_fixed_affine_errors():
    with pytest.raises(ValueError, match="scale finite and non-zero"):
        T.fixed_affine(0.0, 0.0)
    with pytest.raises(ValueError, match="fixed_affine has no params"):
        T.fixed_affine(0.5).apply({"a": 1}, jnp.zeros(2))
