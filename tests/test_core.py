"""Combinators, keys, dtypes and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowjax_lab as fl

T = fl.transforms


def _counting(t, counter):
    """``t`` whose apply/inverse count how often they are traced."""

    def apply(p, x, *, context=None):
        counter["apply"] += 1
        return t.apply(p, x, context=context)

    def inverse(p, z, *, context=None):
        counter["inverse"] += 1
        return t.inverse(p, z, context=context)

    return fl.Transform(t.init, apply, inverse)


def test_chain_runs_in_order_written_and_inverse_in_reverse():
    shift = {"shift": jnp.array([1.0, 2.0]), "log_scale": jnp.zeros(2)}
    t = fl.chain(T.affine(), T.reverse_permutation())
    z, ld = t.apply((shift, {}), jnp.array([1.0, 5.0]))
    chex.assert_trees_all_close(z, jnp.array([3.0, 0.0]))  # shift first, then reverse
    x, _ = t.inverse((shift, {}), z)
    chex.assert_trees_all_close(x, jnp.array([1.0, 5.0]))
    chex.assert_trees_all_close(ld, 0.0)


def test_invert_swaps_directions():
    t = T.lu_linear()
    p = fl.testing.randomize_params(jax.random.key(1), t.init(jax.random.key(0), jnp.zeros(3)))
    x = jnp.array([0.3, -1.0, 2.0])
    chex.assert_trees_all_close(fl.invert(t).apply(p, x), t.inverse(p, x))
    chex.assert_trees_all_close(fl.invert(t).inverse(p, x), t.apply(p, x))


@pytest.mark.parametrize("n", [2, 8, 32])
def test_stack_traces_the_body_once(n):
    chex.clear_trace_counter()
    counter = {"apply": 0, "inverse": 0}
    t = fl.stack(_counting(fl.chain(T.lu_linear(), T.affine()), counter), n)
    x = jnp.ones(4)
    params = t.init(jax.random.key(0), x)
    chex.assert_tree_shape_prefix(params, (n,))
    counter.update(apply=0, inverse=0)
    apply = jax.jit(chex.assert_max_traces(t.apply, n=1))
    apply(params, x)
    apply(params, x + 1.0)  # a second call does not retrace
    jax.jit(t.inverse)(params, x)
    assert counter == {"apply": 1, "inverse": 1}
    eqns = len(jax.make_jaxpr(t.apply)(params, x).jaxpr.eqns)
    assert eqns < 10, f"stack's jaxpr should be one scan, got {eqns} equations"


def test_stack_copies_are_independent_random_permutations():
    t = fl.stack(T.random_permutation(), 4)
    params = t.init(jax.random.key(0), jnp.zeros(6))
    perms = np.asarray(params["permutation"])
    assert len({tuple(p) for p in perms}) > 1
    # the composition equals applying each copy in order
    x = jnp.arange(6.0)
    expected = x
    for p in perms:
        expected = expected[p]
    chex.assert_trees_all_close(t.apply(params, x)[0], expected)


def test_chain_of_shape_changing_transforms():
    def flatten():
        def init(key, x_example):
            return {}

        def apply(p, x, *, context=None):
            return x.reshape(-1), jnp.zeros((), x.dtype)

        return fl.Transform(init, apply, lambda p, z, context=None: (z.reshape(2, 3), 0.0 * z[0]))

    t = fl.chain(T.actnorm(), flatten(), T.lu_linear())
    params = t.init(jax.random.key(0), jnp.zeros((2, 3)))
    assert params[2]["log_diag"].shape == (6,)
    z, _ = t.apply(params, jnp.ones((2, 3)))
    assert z.shape == (6,)


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_new_and_legacy_keys(make_key):
    flow = fl.make_flow(
        fl.stack(fl.chain(T.random_permutation(), T.qr_linear()), 2), event_shape=(3,)
    )
    params = flow.init(make_key(0))
    x = flow.sample(params, make_key(1), 5)
    assert x.shape == (5, 3)
    with pytest.raises(ValueError, match="legacy PRNGKey"):
        flow.init(jnp.zeros(3))


def test_float32_default_and_no_param_casting():
    params = fl.chain(T.lu_linear(), T.affine(), T.qr_linear()).init(
        jax.random.key(0), jnp.zeros(3)
    )
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}


def test_partition_keeps_integer_structure_out_of_training():
    import optax

    flow = fl.make_flow(fl.chain(T.random_permutation(), T.affine()), event_shape=(3,))
    params = flow.init(jax.random.key(0))
    trainable, fixed = fl.partition(params)
    loss = fl.forward_kl(flow)
    opt = optax.adam(0.1)
    state = opt.init(trainable)
    batch = jax.random.normal(jax.random.key(1), (64, 3)) * 2.0 + 1.0
    grads = jax.grad(lambda tr: loss(fl.combine(tr, fixed), batch))(trainable)
    updates, state = opt.update(grads, state)
    new = fl.combine(optax.apply_updates(trainable, updates), fixed)
    chex.assert_trees_all_equal(new[0], params[0])
    assert not np.allclose(new[1]["shift"], params[1]["shift"])


def test_actnorm_data_init_standardises_layer_by_layer():
    flow = fl.make_flow(fl.stack(fl.chain(T.lu_linear(), T.actnorm()), 2), event_shape=(3,))
    batch = jax.random.normal(jax.random.key(0), (512, 3)) * jnp.array([5.0, 0.5, 2.0]) + 3.0
    params = fl.data_init(flow, jax.random.key(1), batch)
    z, _ = jax.vmap(lambda x: flow.transform.apply(params, x))(batch)
    chex.assert_trees_all_close(z.mean(0), jnp.zeros(3), atol=1e-4)
    chex.assert_trees_all_close(z.std(0), jnp.ones(3), atol=1e-3)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "t, event",
    [
        (T.affine(), jnp.zeros(3)),
        (T.lu_linear(), jnp.zeros(3)),
        (T.qr_linear(), jnp.zeros(3)),
        (T.linear(), jnp.zeros(3)),
        (T.triangular(), jnp.zeros(3)),
        (T.conv1x1(), jnp.zeros((2, 2, 3))),
        (T.random_permutation(), jnp.zeros(3)),
    ],
)
def test_wrong_event_shape_names_expected_and_got(t, event):
    params = t.init(jax.random.key(0), event)
    wrong = jnp.zeros(event.shape[:-1] + (event.shape[-1] + 1,))
    with pytest.raises(ValueError, match="expected"):
        t.apply(params, wrong)
    with pytest.raises(ValueError, match="expected"):
        jax.jit(t.inverse)(params, wrong)


def test_wrong_rank_and_dtype():
    t = T.lu_linear()
    params = t.init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="rank 1"):
        t.apply(params, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="floating"):
        t.apply(params, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="rank 3"):
        T.conv1x1().init(jax.random.key(0), jnp.zeros(3))


def test_mismatched_params():
    t = fl.chain(T.lu_linear(), T.affine())
    params = t.init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="expected a tuple of 2 params"):
        t.apply(params[:1], jnp.zeros(3))
    with pytest.raises(ValueError, match="params have shapes"):
        T.lu_linear().apply(T.qr_linear().init(jax.random.key(0), jnp.zeros(3)), jnp.zeros(3))
    with pytest.raises(ValueError, match="leading axis of 3"):
        fl.stack(T.affine(), 3).apply(
            fl.stack(T.affine(), 2).init(jax.random.key(0), jnp.zeros(3)), jnp.zeros(3)
        )


def test_flow_rejects_wrong_data_shape():
    flow = fl.make_flow(T.affine(), event_shape=(3,))
    params = flow.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"expected events of shape \(3,\)"):
        flow.log_prob(params, jnp.zeros((10, 4)))
    with pytest.raises(ValueError, match="floating"):
        flow.log_prob(params, jnp.zeros((10, 3), jnp.int32))
