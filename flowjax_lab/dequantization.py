"""Dequantisation of integer pixels and the exact bits/dim of an image flow.

Integer pixels p in {0, ..., L-1}^D (L = 2^num_bits, D = H W C) become continuous data

    x = (p + u) / L,  u in [0, 1)^D,                       (log|det dx/d(p + u)| = -D log L)

and a model input y = pre(x): the identity (``alpha=None``), or the RealNVP logit
y = logit(alpha + (1 - 2 alpha) x) with log|det dy/dx| = `data.logit_logdet`. For any density
q(u | p) on [0, 1)^D (Theis et al. 2016; Ho et al. 2019, Flow++),

    log P(p) >= E_{u ~ q}[ log p_flow(pre(x)) + log|det dy/dx| - D log L - log q(u | p) ],

with equality iff q(u | p) is the model's own posterior over u. Uniform dequantisation is
q = U[0, 1)^D (log q = 0); variational dequantisation learns q, jointly with the flow, by
maximising the bound. Bits/dim is -bound / (D log 2), computed by `fl.bits_per_dim`.

Pixel values are checked on the host (`data.images.check_pixels`): outside [0, L) or not
integers is a ValueError naming the value. Under ``jit`` (traced pixels) the check is skipped;
check once on the host before training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flowjax_lab import transforms as T
from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, as_key, chain, stack
from flowjax_lab.data.digits import logit_logdet, logit_transform
from flowjax_lab.data.images import check_pixels
from flowjax_lab.flow import Flow, standard_normal
from flowjax_lab.objectives import bits_per_dim, uniform_dequantize_pixels
from flowjax_lab.transforms.image import squeeze_image, unsqueeze_image

Array = jax.Array


def num_levels_of(num_bits: int = 8, num_levels: int | None = None) -> int:
    """L = 2^num_bits, or ``num_levels`` when given (e.g. 17 for the 8x8 digits)."""
    if num_levels is not None:
        return positive_int(num_levels, "num_levels", minimum=2)
    return 2 ** positive_int(num_bits, "num_bits", maximum=16)


def _check(pixels, levels: int, image_shape=None) -> Array:
    """Pixels as an array, range-checked on the host when concrete, shape-checked if asked."""
    if not isinstance(pixels, jax.core.Tracer):
        check_pixels(pixels, levels)
    pixels = jnp.asarray(pixels)
    if image_shape is not None and (
        pixels.ndim != len(image_shape) + 1 or tuple(pixels.shape[1:]) != tuple(image_shape)
    ):
        raise ValueError(
            f"pixels: expected a batch of images of shape (n, {', '.join(map(str, image_shape))}),"
            f" got {tuple(pixels.shape)}"
        )
    return pixels


def preprocess(x: Array, alpha: float | None = None, event_ndim: int = 3) -> tuple[Array, Array]:
    """(y, log|det dy/dx| per event): identity for ``alpha=None``, else the RealNVP logit.

    y = logit(alpha + (1 - 2 alpha) x) (`data.logit_transform`); the log-det
    (`data.logit_logdet`) sums over the last ``event_ndim`` axes. x has shape (*batch, *event).
    """
    if alpha is None:
        return x, jnp.zeros(x.shape[: x.ndim - event_ndim], x.dtype)
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5) or None, got {alpha}")
    y = logit_transform(x, alpha)
    flat = y.reshape(*y.shape[: y.ndim - event_ndim], -1)
    return y, logit_logdet(flat, alpha)


class Dequantizer(NamedTuple):
    """A learned q(u | p) on [0, 1)^D (variational dequantisation).

    ``init(key) -> params``; ``sample_and_log_prob(params, key, pixels) -> (u, log_q)`` for a
    batch of integer images (n, H, W, C): u (n, H, W, C) in (0, 1), log q(u | p) (n,).
    ``transform`` maps base noise e (the squeezed image's shape) to logit(u) given the pixels.
    """

    init: Callable
    sample_and_log_prob: Callable
    transform: Transform


def variational_dequantizer(
    image_shape,
    num_steps: int = 2,
    hidden_channels: int = 16,
    *,
    kernel_size: int = 3,
    num_bits: int = 8,
    num_levels: int | None = None,
) -> Dequantizer:
    """Flow++'s variational dequantisation: u = sigmoid(G(e; p)), e ~ N(0, I).

    G is ``num_steps`` of (1x1 convolution, conditional image affine coupling) on the squeezed
    image (H/2, W/2, 4C), every coupling's ConvNet seeing the squeezed pixels p / L - 1/2 as
    per-pixel context; u = unsqueeze(sigmoid(G(e))). log q(u | p) = log N(e) - log|det dG/de|
    - sum log sigmoid'(G(e)). Cost per image: one pass of G (no inverse is ever needed).
    H and W must be even.
    """
    h, w, c = image_shape
    if h % 2 or w % 2:
        raise ValueError(f"variational_dequantizer: needs even H and W, got {tuple(image_shape)}")
    levels = num_levels_of(num_bits, num_levels)
    shape = (h // 2, w // 2, 4 * c)
    step = chain(T.conv1x1(), T.image_affine_coupling(hidden_channels, kernel_size, 4 * c))
    gen = chain(stack(step, num_steps), T.sigmoid())

    def context(pixels):  # one image -> per-pixel context on the squeezed grid
        return squeeze_image(pixels.astype(jnp.zeros(()).dtype) / levels - 0.5)

    def init(key):
        dtype = jnp.zeros(()).dtype
        return gen.init(as_key(key), jnp.zeros(shape, dtype))

    def sample_and_log_prob(params, key, pixels):
        pixels = _check(pixels, levels, image_shape)
        base = standard_normal(shape)
        e, log_pe = base.sample_and_log_prob(seed=as_key(key), sample_shape=(pixels.shape[0],))
        ctx = jax.vmap(context)(pixels)
        u, logdet = jax.vmap(lambda ei, ci: gen.apply(params, ei, context=ci))(e, ctx)
        return jax.vmap(unsqueeze_image)(u), log_pe - logdet

    return Dequantizer(init, sample_and_log_prob, gen)


def dequantization_bound(
    flow: Flow,
    dequantizer: Dequantizer | None = None,
    *,
    alpha: float | None = None,
    num_bits: int = 8,
    num_levels: int | None = None,
) -> Callable:
    """The dequantised lower bound on log P(p), one sample of u per image (module docstring).

    Returns ``bound(params, key, pixels) -> (n,)`` in nats on the integer-pixel scale, for a
    batch of integer images (n, *flow.event_shape). ``params`` are the flow's params without a
    dequantizer (u ~ U[0, 1)), else ``{"flow": ..., "dequantizer": ...}``. Unbiased for
    E_q[...] <= log P(p); differentiable in both param sets (reparametrised u).
    """
    levels = num_levels_of(num_bits, num_levels)
    dim = math.prod(flow.event_shape)

    def bound(params, key, pixels):
        pixels = _check(pixels, levels, flow.event_shape)
        dtype = jnp.zeros(()).dtype
        if dequantizer is None:
            flow_params, log_q = params, jnp.zeros(pixels.shape[:1], dtype)
            x = uniform_dequantize_pixels(key, pixels.astype(dtype), levels)
        else:
            flow_params = params["flow"]
            u, log_q = dequantizer.sample_and_log_prob(params["dequantizer"], key, pixels)
            x = (pixels.astype(dtype) + u) / levels
        y, pre_logdet = preprocess(x, alpha, len(flow.event_shape))
        return flow.log_prob(flow_params, y) + pre_logdet - dim * math.log(levels) - log_q

    return bound


def dequantization_loss(
    flow: Flow,
    dequantizer: Dequantizer | None = None,
    *,
    alpha: float | None = None,
    num_bits: int = 8,
    num_levels: int | None = None,
) -> Callable:
    """``loss(params, key, pixels)``: mean bits/dim of `dequantization_bound`, to minimise.

    = mean(bits_per_dim(-bound, D)) = -mean(bound) / (D log 2): an upper bound on the
    discrete bits/dim in expectation. Train the flow and a `variational_dequantizer` jointly
    with any optax loop (``jax.grad(loss)``).
    """
    bound = dequantization_bound(
        flow, dequantizer, alpha=alpha, num_bits=num_bits, num_levels=num_levels
    )
    dim = math.prod(flow.event_shape)

    def loss(params, key, pixels):
        return jnp.mean(bits_per_dim(-bound(params, key, pixels), dim))

    return loss


def image_bits_per_dim(
    flow: Flow,
    params,
    x: Array,
    *,
    alpha: float | None = None,
    num_bits: int = 8,
    num_levels: int | None = None,
) -> Array:
    """Bits/dim (n,) on the integer-pixel scale of already dequantised images x = (p + u) / L.

    = bits_per_dim(-log p_flow(pre(x)), D, log|det dy/dx|, num_levels=L): the exact conversion
    (the preprocessing's log-det and the D log L of the 8-bit discretisation).
    """
    levels = num_levels_of(num_bits, num_levels)
    y, pre_logdet = preprocess(jnp.asarray(x), alpha, len(flow.event_shape))
    nll = -flow.log_prob(params, y)
    return bits_per_dim(nll, math.prod(flow.event_shape), pre_logdet, num_levels=levels)
