"""The multiscale architecture of RealNVP and Glow as one shape-preserving transform.

Level l of L gets an image x_l (x_1 = the data, (H, W, C)) and runs

    y_l = step_l(squeeze(x_l))                                   (H/2^l, W/2^l, 2^(l+1) C)
    [y_A, y_B] = y_l split on channels;  x_{l+1} = y_A  (kept, on to level l + 1),
    e_l = (y_B - mu_l(y_A)) exp(-s_l(y_A))   (Glow's learned split prior; e_l = y_B without it)

and the last level keeps everything: e_L = step_L(squeeze(x_L)). The latent is re-assembled to
the data's shape, z_l = unsqueeze([z_{l+1}; e_l]) with z_L = unsqueeze(e_L), so f(x) = z_1 has
shape (H, W, C) and a standard normal base over (H, W, C) works with `fl.make_flow` unchanged:

    log p(x) = log N(z_1; 0, I) + sum_l log|det J_step_l| - sum_{l<L} sum s_l(y_A).

With the prior, y_B ~ N(mu_l(y_A), exp(2 s_l(y_A))) given y_A, which is exactly Glow's learned
conditional Gaussian prior on the factored-out half (mu, s from a zero-initialised conv of the
kept half, so it starts at N(0, I)); the affine map e_l is its whitening, whose log-det makes
log p exact. Without it the factored-out halves are N(0, I). g inverts the levels in reverse
order. Cost: the sum of the levels' steps, the priors (one k x k conv each) and the squeezes
(reshapes); the level at scale l works on HWC/2^(l-1) entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, _batched, _init, as_key
from flowjax_lab.transforms.image import (
    check_image,
    image_affine_coupling,
    squeeze_image,
    unsqueeze_image,
)


def max_levels(height: int, width: int) -> int:
    """How many times an (H, W) image can be squeezed: the number of factors 2 in both H and W."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and height > 0 and width > 0:
        height, width, n = height // 2, width // 2, n + 1
    return n


def check_levels(shape, levels: int, where: str) -> None:
    """A ValueError naming ``levels`` and the allowed maximum if the image cannot take them."""
    h, w = int(shape[0]), int(shape[1])
    positive_int(levels, f"{where}: levels")
    allowed = max_levels(h, w)
    if levels > allowed:
        raise ValueError(
            f"{where}: {levels} levels need H and W divisible by 2^{levels} = {2**levels}, but "
            f"the image is {h} x {w}: at most {allowed} levels allowed (pad or crop the image)"
        )


def multiscale(
    levels: Sequence[Transform], learned_prior: bool = False, prior_kernel_size: int = 3
) -> Transform:
    """RealNVP/Glow multiscale flow: squeeze, a step, factor out half the channels, per level.

    See the module docstring for the math. The output has the input's shape (H, W, C): the
    factored-out parts and the last level's output re-assembled by unsqueezing, so
    ``make_flow(multiscale(...), event_shape=(H, W, C))`` with its standard normal base is the
    multiscale model.

    Args:
        levels: one shape-preserving transform per level (e.g. ``stack(chain(actnorm(),
            conv1x1(), image_affine_coupling()), K)``); level l acts on events of shape
            (H / 2^l, W / 2^l, 2^(l+1) C). H and W must be divisible by 2^len(levels).
        learned_prior: Glow's learned conditional Gaussian prior on each factored-out half, as
            an `image_affine_coupling` with a single zero-initialised conv (hidden_channels=0).
        prior_kernel_size: k of that conv.

    Params: a tuple with one dict per level: ``{"step": ...}`` plus ``"prior"`` on levels
    that factor out. Data-dependent init (``fl.data_init``) reaches every level's step with the
    batch as it arrives there. Context is passed to every step.

    Example:
        >>> t = multiscale([fl.transforms.actnorm(), fl.transforms.actnorm()])
        >>> p = t.init(jax.random.key(0), jnp.zeros((8, 8, 1)))
        >>> z, logdet = t.apply(p, jnp.ones((8, 8, 1)))
    """
    levels = tuple(levels)
    if not levels or not all(isinstance(t, Transform) for t in levels):
        raise ValueError(f"multiscale needs a non-empty sequence of Transforms, got {levels!r}")
    n = len(levels)
    prior = image_affine_coupling(0, prior_kernel_size) if learned_prior else None

    def check(x, where):
        shape = check_image(x, where)
        check_levels(shape, n, where)

    def _check_params(params, where):
        if not isinstance(params, (tuple, list)) or len(params) != n:
            got = len(params) if isinstance(params, (tuple, list)) else type(params).__name__
            raise ValueError(f"{where}: expected a tuple of {n} per-level params, got {got}")

    def init(key, x_example, *, data=None, context=None):
        check(x_example, "multiscale.init")
        keys = jax.random.split(as_key(key), 2 * n)
        params, x = [], x_example
        for level, t in enumerate(levels):
            x = squeeze_image(x)
            data = None if data is None else jax.vmap(squeeze_image)(data)
            entry = {"step": _init(t, keys[2 * level], x, data, context)}
            if level < n - 1:
                if prior is not None:
                    entry["prior"] = prior.init(keys[2 * level + 1], x)
                half = x.shape[-1] // 2
                x = x[..., :half]
                if data is not None:
                    data = _batched(t.apply, entry["step"], data, context)[0][..., :half]
            params.append(entry)
        return tuple(params)

    def forward(params, x, level, context):
        y, total = levels[level].apply(params[level]["step"], squeeze_image(x), context=context)
        if level < n - 1:
            if prior is not None:
                y, ld = prior.apply(params[level]["prior"], y)
                total = total + ld
            half = y.shape[-1] // 2
            kept, ld = forward(params, y[..., :half], level + 1, context)
            y, total = jnp.concatenate([kept, y[..., half:]], axis=-1), total + ld
        return unsqueeze_image(y), total

    def backward(params, z, level, context):
        y, total = squeeze_image(z), jnp.zeros((), z.dtype)
        if level < n - 1:
            half = y.shape[-1] // 2
            kept, total = backward(params, y[..., :half], level + 1, context)
            y = jnp.concatenate([kept, y[..., half:]], axis=-1)
            if prior is not None:
                y, ld = prior.inverse(params[level]["prior"], y)
                total = total + ld
        y, ld = levels[level].inverse(params[level]["step"], y, context=context)
        return unsqueeze_image(y), total + ld

    def apply(params, x, *, context=None):
        check(x, "multiscale.apply")
        _check_params(params, "multiscale.apply")
        return forward(params, x, 0, context)

    def inverse(params, z, *, context=None):
        check(z, "multiscale.inverse")
        _check_params(params, "multiscale.inverse")
        return backward(params, z, 0, context)

    return Transform(init, apply, inverse)
