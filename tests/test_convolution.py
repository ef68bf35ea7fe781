"""flowjax_lab.convolution: the loop-friendly conv equals lax.conv_general_dilated in value and in
every derivative (reverse, forward, second order, under vmap), falls back to lax for other convs,
and its gradients inside a scanned Glow contain only canonical-layout convolutions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import flowjax_lab as fl
from flowjax_lab.convolution import conv2d, conv_general_dilated

NHWC = ("NHWC", "HWIO", "NHWC")
CANONICAL = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _reference(x, kernel, padding):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=NHWC)


def _operands(seed, n, h, w, c_in, c_out, k):
    kx, kk = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (n, h, w, c_in))
    kernel = jax.random.normal(kk, (k, k, c_in, c_out)) / k
    return x, kernel


SHAPES = [  # (n, h, w, c_in, c_out, k, padding)
    (2, 5, 5, 3, 4, 3, "SAME"),
    (1, 4, 6, 2, 2, 1, "SAME"),
    (3, 6, 4, 1, 5, 5, "SAME"),
    (2, 7, 5, 2, 3, 3, "VALID"),
    (1, 5, 6, 3, 2, 3, ((2, 0), (1, 1))),
]


@pytest.mark.parametrize("seed, shape", list(enumerate(SHAPES)))
def test_value_and_derivatives_equal_lax(seed, shape):
    *dims, padding = shape
    x, kernel = _operands(seed, *dims)
    ours = lambda a, b: conv_general_dilated(a, b, (1, 1), padding, dimension_numbers=NHWC)
    ref = lambda a, b: _reference(a, b, padding)
    chex.assert_trees_all_close(ours(x, kernel), ref(x, kernel), atol=1e-5, rtol=1e-5)

    def loss(f):
        def value(a, b):
            y = f(a, b)
            return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape))

        return value

    chex.assert_trees_all_close(
        jax.grad(loss(ours), (0, 1))(x, kernel),
        jax.grad(loss(ref), (0, 1))(x, kernel),
        atol=1e-4,
        rtol=1e-4,
    )
    tangents = _operands(seed + 100, *dims)
    chex.assert_trees_all_close(
        jax.jvp(ours, (x, kernel), tangents),
        jax.jvp(ref, (x, kernel), tangents),
        atol=1e-4,
        rtol=1e-4,
    )
    # second order: Hessian-vector products in the kernel and in x
    hvp = lambda f, i: jax.jvp(jax.grad(loss(f), i), (x, kernel), tangents)[1]
    for i in (0, 1):
        chex.assert_trees_all_close(hvp(ours, i), hvp(ref, i), atol=1e-3, rtol=1e-3)


def test_per_event_vmap_gradient_equals_batched():
    """Transforms run convs on one event under vmap: the kernel gradient is summed, not per-row."""
    x, kernel = _operands(0, 4, 6, 6, 3, 5, 3)
    per_event = lambda k: jnp.sum(jax.vmap(lambda e: conv2d(e[None], k)[0])(x) ** 2)
    batched = lambda k: jnp.sum(_reference(x, k, "SAME") ** 2)
    chex.assert_trees_all_close(jax.grad(per_event)(kernel), jax.grad(batched)(kernel), rtol=1e-4)
    jaxpr = jax.make_jaxpr(jax.grad(per_event))(kernel)
    assert all(eqn.params["feature_group_count"] == 1 for eqn in _convs(jaxpr.jaxpr))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(window_strides=(2, 2), padding="SAME"),
        dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2)),
        dict(window_strides=(1, 1), padding="SAME", feature_group_count=2),
    ],
)
def test_other_convolutions_go_to_lax_unchanged(kwargs):
    x, kernel = _operands(1, 2, 6, 6, 4, 4, 3)
    if kwargs.get("feature_group_count") == 2:
        kernel = kernel[:, :, :2]
    ours = conv_general_dilated(x, kernel, dimension_numbers=NHWC, **kwargs)
    np.testing.assert_array_equal(
        ours, lax.conv_general_dilated(x, kernel, dimension_numbers=NHWC, **kwargs)
    )
    jaxpr = jax.make_jaxpr(
        lambda a: conv_general_dilated(a, kernel, dimension_numbers=NHWC, **kwargs)
    )(x)
    assert "custom_jvp_call" not in str(jaxpr)


def _convs(jaxpr):
    """Every conv_general_dilated equation in a jaxpr, inside scan/while/pjit bodies too."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", None)
                if isinstance(sub, jax.extend.core.Jaxpr):
                    found += _convs(sub)
                elif inner is not None and hasattr(inner, "eqns"):
                    found += _convs(inner)
    return found


@pytest.mark.parametrize("mixing", ["conv1x1_lu", "emerging"])
def test_glow_training_gradient_has_only_canonical_layout_convs(mixing):
    """The property that keeps XLA:CPU off its slow path inside the stacked steps' scan."""
    flow = fl.models.glow((8, 8, 1), levels=2, steps_per_level=2, hidden_channels=8, mixing=mixing)
    x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
    params = flow.init(jax.random.key(1), x[0])
    jaxpr = jax.make_jaxpr(jax.grad(fl.forward_kl(flow), allow_int=True))(params, x)
    convs = _convs(jaxpr.jaxpr)
    assert len(convs) >= 8, len(convs)  # forward, input- and kernel-gradient convs of every step
    for eqn in convs:
        assert eqn.params["dimension_numbers"] == CANONICAL, eqn.params["dimension_numbers"]


def test_flax_conv_through_it_equals_flax_default():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(0), (2, 6, 5, 3))
    for padding in ("SAME", "CIRCULAR", ((2, 0), (1, 1))):
        ours = nn.Conv(4, (3, 3), padding=padding, conv_general_dilated=conv_general_dilated)
        ref = nn.Conv(4, (3, 3), padding=padding)
        params = ref.init(jax.random.key(1), x)
        chex.assert_trees_all_close(ours.apply(params, x), ref.apply(params, x), atol=1e-5)
        grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, x) ** 2))(params) for m in (ours, ref)]
        chex.assert_trees_all_close(*grads, atol=1e-4, rtol=1e-4)


def test_batched_kernels_under_vmap_equal_lax():
    x, _ = _operands(2, 3, 5, 5, 2, 3, 3)
    kernels = jax.random.normal(jax.random.key(5), (3, 3, 3, 2, 3))
    loss = lambda f: lambda k, a: jnp.sum(jnp.tanh(f(a[None], k)))
    ours = jax.vmap(jax.grad(loss(lambda a, k: conv2d(a, k))))(kernels, x)
    ref = jax.vmap(jax.grad(loss(lambda a, k: _reference(a, k, "SAME"))))(kernels, x)
    chex.assert_trees_all_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "strides, padding, lhs_dilation",
    [((), "SAME", None), ((1, 1), "SAME", (1,)), ((1, 1), ((1.5, 1), (1, 1)), None)],
)
def test_malformed_arguments_are_errors(strides, padding, lhs_dilation):
    x, kernel = _operands(0, 2, 6, 5, 4, 2, 3)
    with pytest.raises((ValueError, TypeError)):
        conv_general_dilated(
            x, kernel, strides, padding, lhs_dilation=lhs_dilation, dimension_numbers=NHWC
        )


def test_one_sided_derivatives_convolve_only_what_they_need():
    """Symbolic-zero tangents: grad in x alone (or the kernel alone) adds one conv, as lax's."""
    x, kernel = _operands(0, 2, 5, 5, 3, 4, 3)
    count = lambda jaxpr: str(jaxpr).count("conv_general_dilated")
    for argnums in (0, 1):
        ours = jax.make_jaxpr(jax.grad(lambda a, b: jnp.sum(conv2d(a, b) ** 2), argnums))
        ref = jax.make_jaxpr(jax.grad(lambda a, b: jnp.sum(_reference(a, b, "SAME") ** 2), argnums))
        assert count(ours(x, kernel)) == count(ref(x, kernel)) == 2
