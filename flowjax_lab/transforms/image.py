"""Layers for image events of shape (H, W, C)."""

from __future__ import annotations

import jax.numpy as jnp

from flowjax_lab.core import Transform
from flowjax_lab.transforms.linear import (
    _full_forward,
    _full_init,
    _full_logdet,
    _full_solve,
    _lu_init,
    _lu_parts,
    matrix_transform,
)


def conv1x1(lu: bool = True) -> Transform:
    """Invertible 1x1 convolution (Glow): the same C x C matrix W mixes channels at every pixel.

    f(x)[h, w] = W x[h, w]; g(z)[h, w] = W^-1 z[h, w]; log|det J_f| = H * W * log|det W|.
    ``lu=False``: W a full matrix, O(C^3) log-det and solve plus O(HWC^2) to apply.
    ``lu=True``: W = L U (unit-lower L, upper U with diagonal exp(log_diag)), O(C) log-det and
    O(HWC^2) both ways. Starts at W = I.
    """
    if lu:
        forward, solve = _lu_parts(None)
        logdet = lambda p: jnp.sum(p["log_diag"])  # noqa: E731
        return matrix_transform("conv1x1", _lu_init, forward, solve, logdet, 3)
    return matrix_transform("conv1x1", _full_init, _full_forward, _full_solve, _full_logdet, 3)
