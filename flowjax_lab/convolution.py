"""A 2-D convolution whose derivatives XLA runs at full speed inside ``lax.scan`` loops.

``conv_general_dilated`` has ``jax.lax.conv_general_dilated``'s signature and value. For
stride-1, undilated, ungrouped NHWC x HWIO convolutions (every conv of `nets.ConvNet` and of the
emerging convolutions) it carries a ``custom_jvp`` whose tangent is

    dy = conv(dx, W) + conv(x, dW),

the same math as JAX's own rule, written so that the convolutions reverse mode makes of it (the
input gradient, a conv of dy with the flipped kernel, and the kernel gradient
dW[a, b, i, o] = Σ_{n,h,w} x_pad[n, h+a, w+b, i] dy[n, h, w, o]) have operands and results in
the canonical NHWC / HWIO layouts, with the transposes as explicit ops. Why: XLA:CPU runs a
convolution with a non-canonical layout on a slow generic path when it sits in a while loop (a
``stack``-ed layer's ``lax.scan``), where layout assignment cannot move the transposes out. In
JAX's own rule the kernel gradient reads x with batch and channels swapped, and a scanned Glow
step's gradient took 5-8x longer than the same step unrolled (measured in
``benchmarks/glow_throughput.py``). Forward mode (``jax.jacfwd``), ``vmap`` and higher
derivatives work as for ``lax.conv_general_dilated``. Any other convolution goes straight to
``lax.conv_general_dilated``.

Cost: the same convolutions as JAX's rule, plus a transpose of x, dy and W per gradient.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

Array = jax.Array

_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_canonical_2d(lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers):
    """True for a 2-D, stride-1, undilated conv in NHWC x HWIO -> NHWC (anything else, and any
    malformed argument, goes to lax, which checks it)."""
    if lhs.ndim != 4 or rhs.ndim != 4 or dimension_numbers is None:
        return False
    if len(window_strides) != 2 or any(s != 1 for s in window_strides):
        return False
    for dilation in (lhs_dilation, rhs_dilation):
        if dilation is not None and (len(dilation) != 2 or any(v != 1 for v in dilation)):
            return False
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return given == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)


def _conv(x: Array, kernel: Array, padding, precision, dimension_numbers=_NHWC) -> Array:
    return lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=dimension_numbers, precision=precision
    )


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv_nhwc(x: Array, kernel: Array, padding, precision) -> Array:
    return _conv(x, kernel, padding, precision)


def _conv_nhwc_jvp(padding, precision, primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    y = _conv_nhwc(x, kernel, padding, precision)
    terms = []  # a symbolic-zero tangent adds no convolution
    if not isinstance(dx, SymbolicZero):
        # conv(dx, W) with W given as HWOI: its transpose (the input gradient) reads W as HWIO.
        terms.append(_conv(dx, kernel.swapaxes(2, 3), padding, precision, ("NHWC", "HWOI", "NHWC")))
    if not isinstance(dkernel, SymbolicZero):
        # conv(x, dW) with x given as CHWN, dW as IHWO and the result as HWNC: its transpose in
        # dW (the kernel gradient) reads x^T as NHWC, dy^T as HWIO and writes dW^T as NHWC.
        y_hwnc = _conv(
            x.transpose(3, 1, 2, 0),
            dkernel.transpose(2, 0, 1, 3),
            padding,
            precision,
            ("CHWN", "IHWO", "HWNC"),
        )
        terms.append(y_hwnc.transpose(2, 0, 1, 3))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_conv_nhwc.defjvp(_conv_nhwc_jvp, symbolic_zeros=True)


def conv_general_dilated(
    lhs: Array,
    rhs: Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> Array:
    """``lax.conv_general_dilated``, with loop-friendly derivatives for stride-1 NHWC convs.

    Pass it to flax as ``nn.Conv(..., conv_general_dilated=conv_general_dilated)``. Cost: that
    of the convolution, O(N H W k² C_in C_out), one pass.
    """
    fast = (
        feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and _is_canonical_2d(
            lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers
        )
    )
    if not fast:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    padding = tuple(tuple(pair) for pair in padding)
    if len(padding) != 2 or any(
        len(pair) != 2 or not all(isinstance(p, (int, np.integer)) for p in pair)
        for pair in padding
    ):
        raise ValueError(
            f"padding must be a string or two (low, high) integer pairs, got {padding}"
        )
    return _conv_nhwc(lhs, rhs, tuple((int(lo), int(hi)) for lo, hi in padding), precision)


def conv2d(x: Array, kernel: Array, padding="SAME") -> Array:
    """``y[n,h,w,o] = Σ_{a,b,i} x_pad[n, h+a, w+b, i] W[a, b, i, o]`` on NHWC x HWIO, stride 1."""
    return conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_NHWC)


__all__ = ["conv2d", "conv_general_dilated"]
