"""Image flows: squeeze, Glow (multiscale, data init, flat compile, training on 8x8 digits),
emerging convolutions inside Glow, dequantisation and the exact bits/dim conversion."""

import math

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.stats import norm

import flowjax_lab as fl
from flowjax_lab import dequantization as dq
from flowjax_lab.data.images import load_digits_images
from flowjax_lab.transforms.image import squeeze_image

T = fl.transforms


# --------------------------------------------------------------------------- squeeze and errors


def test_squeeze_unsqueeze_exact_inverse_and_layout():
    x = jnp.arange(4 * 6 * 3.0).reshape(4, 6, 3)
    z, logdet = T.squeeze().apply({}, x)
    chex.assert_shape(z, (2, 3, 12))
    assert float(logdet) == 0.0
    assert float(z[1, 2, 4 * 2 + 2 * 1 + 0]) == float(x[3, 4, 2])  # channel 4c + 2i + j
    np.testing.assert_array_equal(T.unsqueeze().apply({}, z)[0], x)
    np.testing.assert_array_equal(T.squeeze().inverse({}, z)[0], x)
    np.testing.assert_array_equal(T.unsqueeze().inverse({}, x)[0], T.squeeze().apply({}, x)[0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: T.squeeze().apply({}, jnp.zeros((3, 4, 1))), r"even H and W.*\(3, 4, 1\)"),
        (lambda: T.squeeze().apply({}, jnp.zeros((4, 4))), r"\(H, W, C\), got \(4, 4\)"),
        (lambda: T.unsqueeze().apply({}, jnp.zeros((2, 2, 6))), r"divisible by 4.*\(2, 2, 6\)"),
        (lambda: fl.models.glow((28, 28, 1), levels=3), r"3 levels.*28 x 28.*at most 2 levels"),
        (lambda: fl.models.glow((8, 8, 1), levels=0), r"levels must be a positive integer"),
        (lambda: fl.models.glow((28, 28), levels=1), r"image_shape must be \(H, W, C\).*28, 28"),
        (lambda: fl.models.glow((8, 8, 1), 1, mixing="lu"), r"mixing must be one of.*'lu'"),
        (lambda: T.emerging_conv(2), r"kernel_size must be odd, got 2"),
        (lambda: T.image_affine_coupling(4).init(jax.random.key(0), jnp.zeros((4, 4, 1))),
         r"at least 2 channels, got C = 1"),
        (lambda: fl.data.dequantize_images(jax.random.key(0), np.array([0, 3, 256]), 256),
         r"value 256 at flat index 2 is outside \[0, 256\)"),
        (lambda: fl.data.dequantize_images(jax.random.key(0), np.array([-1.0, 3.0]), 256),
         r"value -1.0 .*outside \[0, 256\)"),
        (lambda: fl.data.dequantize_images(jax.random.key(0), np.array([2.5]), 16),
         r"value 2.5 .*not an integer.*\[0, 16\)"),
    ],
)  # fmt: skip
def test_bad_input_names_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_glow_log_prob_rejects_wrong_image_shape():
    flow = fl.models.glow((4, 4, 1), levels=2, steps_per_level=1, hidden_channels=4)
    params = jax.eval_shape(flow.init, jax.random.key(0))  # the shape check comes first
    with pytest.raises(ValueError, match=r"\(4, 4, 1\).*got an array of shape \(2, 4, 4\)"):
        flow.log_prob(params, jnp.zeros((2, 4, 4)))


# --------------------------------------------------------------------------- glow


def test_glow_compile_is_flat_in_steps_per_level():
    def eqns(jaxpr):  # equations, counting those of sub-jaxprs (scan bodies) too
        total = 0
        for e in jaxpr.eqns:
            total += 1
            for p in e.params.values():
                for sub in p if isinstance(p, (tuple, list)) else [p]:
                    inner = getattr(sub, "jaxpr", None)
                    if inner is not None:
                        total += eqns(getattr(inner, "jaxpr", inner))
        return total

    x = jnp.zeros((3, 8, 8, 1))
    for mixing, coupling in [("conv1x1_lu", "affine"), ("emerging", "spline")]:
        sizes = []
        for k in (2, 8):
            flow = fl.models.glow((8, 8, 1), 2, k, 4, coupling, mixing)
            params = jax.eval_shape(flow.init, jax.random.key(0))
            grad = jax.grad(fl.forward_kl(flow), allow_int=True)  # LU perm/sign are ints
            sizes.append(eqns(jax.make_jaxpr(grad)(params, x).jaxpr))
            sizes.append(
                eqns(
                    jax.make_jaxpr(flow.sample, static_argnums=2)(
                        params, jax.random.key(0), 2
                    ).jaxpr
                )
            )
        assert sizes[:2] == sizes[2:], (mixing, sizes)


@pytest.mark.slow
def test_glow_with_emerging_convs_samples_agree_with_log_prob():
    # the inverse (sampling) runs each emerging conv's sequential substitution
    flow = fl.models.glow((4, 4, 1), 2, 1, 4, mixing="emerging", preprocessing=None)
    params = jax.jit(flow.init)(jax.random.key(0))
    params = fl.testing.randomize_params(jax.random.key(1), params, 0.05)
    x, lp = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, jax.random.key(2), 8)
    chex.assert_shape(x, (8, 4, 4, 1))
    chex.assert_trees_all_close(lp, jax.jit(flow.log_prob)(params, x), atol=1e-3, rtol=1e-4)


@pytest.fixture(scope="module")
def digits():
    splits = load_digits_images(jax.random.key(0))
    levels = splits.num_levels
    train = fl.data.dequantize_images(jax.random.key(1), splits.train, levels)
    test = fl.data.dequantize_images(jax.random.key(2), splits.test, levels)
    flow = fl.models.glow((8, 8, 1), levels=2, steps_per_level=2, hidden_channels=16)
    init = jax.jit(lambda k, b: fl.data_init(flow, k, b))
    params = init(jax.random.key(3), jnp.asarray(train[:256]))
    return flow, params, train, test, levels


def test_data_init_standardises_the_first_batch_at_every_level(digits):
    # With identity-initialised mixings the zero-initialised couplings leave each level's
    # actnorm output unchanged, so every factored-out half is standardised (a random rotation
    # after the actnorm would mix the halves: see test_glow_init for that init).
    _, _, train, _, _ = digits
    flow = fl.models.glow((8, 8, 1), 2, 2, 16, random_rotation=False)
    params = jax.jit(lambda k, b: fl.data_init(flow, k, b))(jax.random.key(3), train[:256])
    z = jax.jit(jax.vmap(flow.transform.apply, (None, 0)))(params, jnp.asarray(train[:256]))[0]
    y = jax.vmap(squeeze_image)(z)  # level 1: channels 2, 3 factored out, 0, 1 to level 2
    for part in (y[..., 2:], jax.vmap(squeeze_image)(y[..., :2])):
        flat = part.reshape(-1, part.shape[-1])
        np.testing.assert_allclose(flat.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(flat.std(0), 1.0, atol=1e-3)
    assert float(jnp.std(train)) < 0.5  # the data itself is not standardised


@pytest.mark.slow  # ~25 s of training
def test_glow_trains_on_digits_below_stated_bits_per_dim(digits):
    flow, params, train, test, levels = digits
    bpd = jax.jit(lambda p: jnp.mean(dq.image_bits_per_dim(flow, p, test, num_levels=levels)))
    before = float(bpd(params))
    result = fl.fit(
        jax.random.key(4),
        flow,
        params,
        data=train,
        steps=60,
        batch_size=128,
        optimizer=optax.adam(3e-3),
        progress=False,
    )
    after = float(bpd(result.params))
    # uniform over 17 levels is log2(17) = 4.09 bits/dim; with the default logit preprocessing
    # measured 3.71 at init -> 2.61 after 60 steps (identity mixings, no logit: 4.64 -> 3.32)
    assert before > 3.5
    assert after < 2.9, (before, after)


# --------------------------------------------------------------------------- dequantisation


def _uniform_model(shape, alpha):
    """A flow whose density on the model input y is the push-forward of x ~ U[0, 1)^D."""
    base = distrax.Independent(distrax.Uniform(jnp.zeros(shape), jnp.ones(shape)), len(shape))
    if alpha is None:
        flow = fl.make_flow(T.affine(), base)
        return flow, jax.jit(flow.init)(jax.random.key(0))
    # y -> s = sigmoid(y) in (alpha, 1 - alpha) -> x = (s - alpha) / (1 - 2 alpha)
    flow = fl.make_flow(fl.chain(T.sigmoid(), T.affine()), base)
    affine = {
        "shift": jnp.full(shape, alpha),
        "log_scale": jnp.full(shape, math.log(1 - 2 * alpha)),
    }
    return flow, ({}, affine)


@pytest.mark.parametrize("alpha", [None, 0.05])
def test_bits_per_dim_is_exact_for_the_uniform_model(alpha):
    shape, levels = (4, 4, 1), 16
    flow, params = _uniform_model(shape, alpha)
    pixels = jax.random.randint(jax.random.key(1), (32, *shape), 0, levels)
    x = fl.data.dequantize_images(jax.random.key(2), pixels, levels)
    assert float(x.min()) >= 0.0 and float(x.max()) < 1.0
    np.testing.assert_array_equal(np.floor(x * levels), pixels)
    bpd = jax.jit(lambda p, x: dq.image_bits_per_dim(flow, p, x, alpha=alpha, num_bits=4))(
        params, x
    )
    np.testing.assert_allclose(bpd, math.log2(levels), rtol=1e-5)  # P(p) = L^-D exactly
    bound = dq.dequantization_bound(flow, alpha=alpha, num_bits=4)(
        params, jax.random.key(3), pixels
    )
    np.testing.assert_allclose(bound, -math.prod(shape) * math.log(levels), rtol=1e-5)


@pytest.mark.slow
def test_variational_dequantization_is_a_bound_that_beats_uniform():
    """Gaussian 'pixels': the model is N(mu, sigma^2) per entry, so log P(p) is exact."""
    shape, levels = (4, 4, 1), 16
    dim = math.prod(shape)
    image = jax.random.randint(jax.random.key(0), shape, 0, levels)
    pixels = jnp.broadcast_to(image, (64, *shape))
    flow = fl.make_flow(T.affine(), event_shape=shape)  # z = (x - mu) / sigma
    gauss = {"shift": (image + 0.5) / levels, "log_scale": jnp.full(shape, math.log(0.3 / levels))}
    deq = dq.variational_dequantizer(shape, num_steps=2, hidden_channels=4, num_bits=4)
    params = {"flow": gauss, "dequantizer": jax.jit(deq.init)(jax.random.key(1))}

    def exact_bpd(p):  # -log2 P(p) / D with P(p) = prod_i Phi(hi_i) - Phi(lo_i)
        mu, sigma = p["shift"], jnp.exp(p["log_scale"])
        mass = norm.cdf(((image + 1) / levels - mu) / sigma) - norm.cdf(
            (image / levels - mu) / sigma
        )
        return -float(jnp.sum(jnp.log(mass))) / (dim * math.log(2))

    loss = dq.dequantization_loss(flow, deq, num_bits=4)
    uniform = jax.jit(dq.dequantization_loss(flow, num_bits=4))(gauss, jax.random.key(5), pixels)
    opt = optax.adam(1e-2)

    trainable, fixed = fl.partition(params)  # the dequantizer's 1x1 LU convs keep P and signs

    @jax.jit
    def step(tr, state, key):
        value, grads = jax.value_and_grad(lambda t: loss(fl.combine(t, fixed), key, pixels))(tr)
        updates, state = opt.update(grads, state, tr)
        return optax.apply_updates(tr, updates), state, value

    state, start = opt.init(trainable), float(jax.jit(loss)(params, jax.random.key(6), pixels))
    for i in range(30):  # the flow and q jointly
        trainable, state, _ = step(trainable, state, jax.random.key(10 + i))
    params = fl.combine(trainable, fixed)
    end = float(jax.jit(loss)(params, jax.random.key(7), pixels))
    # exact: 0.14 bits/dim at init, 0.06 for the trained flow
    assert start >= exact_bpd(gauss) - 0.01  # a bound at init ...
    assert end >= exact_bpd(params["flow"]) - 0.01  # ... and after training (MC error ~0.005)
    assert end < float(uniform) - 0.1, (float(uniform), start, end)  # measured 0.28 vs 0.23 -> 0.11


def test_emerging_conv_receptive_field_is_the_sum_of_its_two_masks():
    """f = B o A: output pixel p depends on exactly the inputs at p + a + b, a an offset that A's
    mask keeps (raster order up to the centre), b one that B's keeps (the reverse): every
    off-centre weight is used and nothing outside the masks leaks in."""
    k, (h, w, c) = 3, (9, 9, 2)
    t = T.emerging_conv(k)
    x = jax.random.normal(jax.random.key(0), (h, w, c))
    params = fl.testing.randomize_params(jax.random.key(1), t.init(jax.random.key(2), x), 0.5)
    jac = jax.jacfwd(lambda v: t.apply(params, v)[0])(x)  # (h, w, c, h, w, c)
    reach = np.abs(np.asarray(jac)).sum(axis=(2, 5))[4, 4]  # out pixel (4, 4) <- in (h, w)
    got = {(int(r) - 4, int(q) - 4) for r, q in zip(*np.nonzero(reach > 1e-6))}
    r = k // 2
    mask_a = {(i, j) for i in range(-r, r + 1) for j in range(-r, r + 1) if (i, j) <= (0, 0)}
    expected = {(a[0] - b[0], a[1] - b[1]) for a in mask_a for b in mask_a}
    assert got == expected, sorted(got ^ expected)
    assert len(expected) == 13  # k = 3: rows -1..1, the centre row 5 wide, the others 4
