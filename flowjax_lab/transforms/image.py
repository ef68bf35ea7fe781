"""Layers for image events of shape (H, W, C): 1x1 convolutions, squeeze, channel couplings.

Multiscale (RealNVP/Glow) architectures are in `multiscale`, emerging convolutions in
`emerging`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, as_key, check_event
from flowjax_lab.nets import ConvNet
from flowjax_lab.transforms.autoregressive import check_params
from flowjax_lab.transforms.coupling import coupling_transform
from flowjax_lab.transforms.linear import (
    _full_forward,
    _full_init,
    _full_logdet,
    _full_rotation_init,
    _full_solve,
    _lu_init,
    _lu_logdet,
    _lu_parts,
    _lu_rotation_init,
    matrix_transform,
)
from flowjax_lab.transforms.spline import Transformer, make_transformer

Array = jax.Array


def conv1x1(lu: bool = True, *, random_rotation: bool = True) -> Transform:
    """Invertible 1x1 convolution (Glow): the same C x C matrix W mixes channels at every pixel.

    f(x)[h, w] = W x[h, w]; g(z)[h, w] = W^-1 z[h, w]; log|det J_f| = H * W * log|det W|.
    ``lu=False``: W a full matrix, O(C^3) log-det and solve plus O(HWC^2) to apply.
    ``lu=True``: W = P L (U + diag(s)) (unit-lower L, strictly upper U), O(C) log-det and
    O(HWC^2) both ways.

    Starts (``random_rotation=True``, Glow's init) at a random orthogonal W drawn from the init
    key, so consecutive couplings see different channel mixtures from the first step. For
    ``lu=True`` that W is decomposed once: the permutation P ("perm") and the signs of s
    ("sign") are integer leaves that training never changes; L, U and log|s| are trained, so
    every invertible W with that P and those signs is reachable. ``random_rotation=False``:
    W = I, P = I and s = exp(log_diag) > 0 (then only W with positive leading minors are
    reachable by the LU form).
    """
    if lu:
        forward, solve = _lu_parts(None)
        init = _lu_rotation_init if random_rotation else _lu_init
        return matrix_transform("conv1x1", init, forward, solve, _lu_logdet, 3)
    init = _full_rotation_init if random_rotation else _full_init
    return matrix_transform("conv1x1", init, _full_forward, _full_solve, _full_logdet, 3)


# --------------------------------------------------------------------------- squeeze


def check_image(x, where: str) -> tuple[int, int, int]:
    """(H, W, C) of one float image event, or a ValueError naming the shape."""
    if not hasattr(x, "shape") or len(x.shape) != 3:
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(
            f"{where}: expected one image event of shape (H, W, C), got {got} "
            "(transforms take unbatched events: use jax.vmap for batches)"
        )
    check_event(x, x.shape, where)
    return tuple(int(s) for s in x.shape)


def squeeze_image(x: Array, where: str = "squeeze") -> Array:
    """(H, W, C) -> (H/2, W/2, 4C); output channel 4c + 2i + j holds x[2h + i, 2w + j, c]."""
    h, w, c = check_image(x, where)
    if h % 2 or w % 2:
        raise ValueError(
            f"{where}: squeeze needs even H and W, got an image of shape {(h, w, c)} "
            "(pad or crop it to even sizes)"
        )
    y = x.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 4, 1, 3)
    return y.reshape(h // 2, w // 2, 4 * c)


def unsqueeze_image(z: Array, where: str = "unsqueeze") -> Array:
    """(H, W, 4C) -> (2H, 2W, C), the exact inverse of `squeeze_image`."""
    h, w, c4 = check_image(z, where)
    if c4 % 4:
        raise ValueError(
            f"{where}: unsqueeze needs a channel count divisible by 4, got an image of shape "
            f"{(h, w, c4)}"
        )
    c = c4 // 4
    x = z.reshape(h, w, c, 2, 2).transpose(0, 3, 1, 4, 2)
    return x.reshape(2 * h, 2 * w, c)


def _no_params(params, where):
    if params is not None and (not isinstance(params, dict) or params):
        raise ValueError(f"{where}: this layer has no params, expected {{}}, got {params}")


def _reshape_transform(name: str, fwd, bwd) -> Transform:
    def init(key, x_example):
        del key
        fwd(x_example, f"{name}.init")  # shape checks
        return {}

    def apply(params, x, *, context=None):
        del context
        _no_params(params, f"{name}.apply")
        return fwd(x, f"{name}.apply"), jnp.zeros((), x.dtype)

    def inverse(params, z, *, context=None):
        del context
        _no_params(params, f"{name}.inverse")
        return bwd(z, f"{name}.inverse"), jnp.zeros((), z.dtype)

    return Transform(init, apply, inverse)


def squeeze() -> Transform:
    """Space-to-depth (RealNVP/Glow): each 2x2 block of pixels becomes 4 channels of one pixel.

    f: (H, W, C) -> (H/2, W/2, 4C), f(x)[h, w, 4c + 2i + j] = x[2h + i, 2w + j, c];
    g = `unsqueeze`. A permutation of the entries: log|det J| = 0. No params (``{}``); a
    reshape and a transpose, O(HWC) both ways. H and W must be even (ValueError otherwise).

    Example:
        >>> t = squeeze(); z, logdet = t.apply({}, jnp.zeros((4, 4, 1)))
        >>> z.shape
        (2, 2, 4)
    """
    return _reshape_transform("squeeze", squeeze_image, unsqueeze_image)


def unsqueeze() -> Transform:
    """Depth-to-space, the inverse of `squeeze`: (H, W, 4C) -> (2H, 2W, C); log|det J| = 0.

    C must be divisible by 4 (ValueError otherwise). No params; O(HWC) both ways.
    """
    return _reshape_transform("unsqueeze", unsqueeze_image, squeeze_image)


# --------------------------------------------------------------------------- channel couplings


def image_context(context, context_channels: int, spatial, dtype, where: str):
    """None, or the context as one (C_c,) vector or a per-pixel (H, W, C_c) image."""
    if context_channels == 0:
        return None
    if context is None:
        raise ValueError(f"{where}: context_channels={context_channels} but no context given")
    context = jnp.asarray(context, dtype)
    if context.shape not in ((context_channels,), (*spatial, context_channels)):
        raise ValueError(
            f"{where}: expected a context of shape ({context_channels},) or "
            f"{(*spatial, context_channels)}, got {tuple(context.shape)}"
        )
    return context


def _image_coupling(
    name: str, tr: Transformer, hidden_channels: int, kernel_size: int, context_channels: int
) -> Transform:
    for arg, value, low in (
        ("hidden_channels", hidden_channels, 0),
        ("context_channels", context_channels, 0),
        ("kernel_size", kernel_size, 1),
    ):
        positive_int(value, f"{name}: {arg}", minimum=low)
    if kernel_size % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be odd, got {kernel_size}")

    @functools.cache
    def net(channels: int) -> ConvNet:
        if channels < 2:
            raise ValueError(
                f"{name}: a channel coupling needs at least 2 channels, got C = {channels} "
                "(squeeze the image first)"
            )
        out = (channels - channels // 2) * tr.num_params
        return ConvNet(hidden_channels, out, kernel_size)

    def init(key, x_example):
        h, w, c = check_image(x_example, f"{name}.init")
        ctx = jnp.zeros((context_channels,), x_example.dtype) if context_channels else None
        xa = x_example[..., : c // 2]
        return {"conditioner": net(c).init(as_key(key), xa, ctx)["params"]}

    @functools.cache
    def expected(shape, dtype):
        return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct(shape, dtype))

    def split(params, x, context, where):
        h, w, c = check_image(x, where)
        ctx = image_context(context, context_channels, (h, w), x.dtype, where)
        check_params(params, expected((h, w, c), x.dtype), where)
        xa, xb = x[..., : c // 2], x[..., c // 2 :]
        raw = net(c).apply({"params": params["conditioner"]}, xa, ctx)
        return xa, xb, raw.reshape(*xb.shape, tr.num_params), _merge_channels

    return coupling_transform(name, tr, init, split)


def _merge_channels(xa, yb):
    return jnp.concatenate([xa, yb], axis=-1)


_SCALES = {"exp": "affine", "sigmoid": "glow_affine", "none": "additive"}


def image_affine_coupling(
    hidden_channels: int = 64,
    kernel_size: int = 3,
    context_channels: int = 0,
    *,
    scale: str = "exp",
) -> Transform:
    """Channel-wise affine coupling for images (RealNVP/Glow) with a `nets.ConvNet` conditioner.

    The channels split into x_A = x[..., :C//2] (kept) and x_B = x[..., C//2:]:
    f(x)_A = x_A, f(x)_B = (x_B - mu(x_A, c)) * a(x_A, c); g: x_B = z_B / a(z_A, c) + mu(z_A, c);
    log|det J_f| = sum_{h, w, B} log a. The scale a from the conditioner's raw output r:
    ``scale="exp"``: a = exp(-5 tanh(r / 5)) (starts at the identity); ``"sigmoid"``: Glow's
    a = sigmoid(r + 2) in (0, 1) (starts at a = 0.88); ``"none"``: a = 1, NICE's additive
    coupling (log-det 0, starts at the identity). The conditioner's last conv starts at zero.
    One conditioner pass each way, O(HW (k^2 C h + h^2)) per event. Mix channels between
    couplings (`conv1x1`).

    Args:
        hidden_channels: conditioner width h (0: a single zero-initialised k x k conv, as in
            Glow's split prior).
        kernel_size: k of the conditioner's first and last convs (odd).
        context_channels: length of a context, either one vector (C_c,) for the whole image or
            a per-pixel (H, W, C_c) image, concatenated to x_A's channels (0: unconditional).
        scale: "exp", "sigmoid" or "none" (above).

    Example:
        >>> t = image_affine_coupling(8); p = t.init(jax.random.key(0), jnp.zeros((4, 4, 2)))
        >>> z, logdet = t.apply(p, jnp.ones((4, 4, 2)))
    """
    if scale not in _SCALES:
        raise ValueError(
            f"image_affine_coupling: scale must be one of {list(_SCALES)}, got {scale!r}"
        )
    tr = make_transformer(_SCALES[scale])
    return _image_coupling(
        "image_affine_coupling", tr, hidden_channels, kernel_size, context_channels
    )


def image_spline_coupling(
    hidden_channels: int = 64,
    bins: int = 8,
    bound: float = 3.0,
    kernel_size: int = 3,
    context_channels: int = 0,
) -> Transform:
    """Channel-wise rational-quadratic spline coupling: z_B = RQS(x_B; theta(x_A, c)).

    K ``bins`` on [-``bound``, ``bound``], identity outside; the conditioner gives 3K - 1 raw
    params per transformed entry. g: the exact RQS inverse; log|det J_f| = sum log RQS'(x_i).
    One conditioner pass each way. Split, conditioner and context as in
    `image_affine_coupling`.
    """
    tr = make_transformer("spline", bins, bound)
    return _image_coupling(
        "image_spline_coupling", tr, hidden_channels, kernel_size, context_channels
    )
