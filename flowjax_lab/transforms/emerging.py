"""Emerging k x k convolutions (Hoogeboom, van den Berg and Welling 2019).

An invertible k x k convolution built from two masked (autoregressive) convolutions. Order the
entries of an (H, W, C) image by pixel in raster order, then by channel. Convolution A reads,
at output pixel p and channel o, only the inputs at pixels before p in raster order and, at p
itself, channels i <= o: its Jacobian on the flattened image is lower triangular with diagonal
exp(log_diag), the same at every pixel. Convolution B is the same construction in the reversed
order (pixels from the last, channels from the last: flip H, W and C, apply a masked conv, flip
back) with a unit diagonal, so its Jacobian is upper triangular with ones on the diagonal:

    f(x) = B(A(x)),    log|det J_f| = H W sum(log_diag)   (B contributes 0).

The product of a lower and an upper triangular operator is a convolution whose "emerging"
receptive field is the sum of the two masks' offsets: k rows, up to 2k - 1 columns (13 pixels
for k = 3, tested). g = A^-1 B^-1, each solved by sequential substitution: pixel
by pixel in the mask's order (a ``lax.fori_loop``, traced once, no Python loop over pixels),
subtracting the already-solved neighbours and solving the C x C triangular centre.

Cost: f is two convolutions, O(HW k^2 C^2), one pass; g is 2 HW sequential steps of
O(k^2 C^2) each (sampling only; density evaluation never needs g).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.convolution import conv2d
from flowjax_lab.core import Transform
from flowjax_lab.transforms.autoregressive import check_params
from flowjax_lab.transforms.image import check_image
from flowjax_lab.transforms.linear import random_orthogonal

Array = jax.Array


@functools.cache
def _masks(k: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """(off-centre mask, strict centre mask) of a raster-order kernel of shape (k, k, C, C).

    Entry [a, b, i, o] of the kernel (HWIO) weights input pixel (h + a - r, w + b - r), channel
    i, into output (h, w), channel o (r = k // 2). Allowed: earlier rows (a < r), earlier
    columns of the same row (a = r, b < r), and at the centre the channels i < o (the diagonal
    i = o is added separately).
    """
    r = k // 2
    a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    earlier = (a < r) | ((a == r) & (b < r))
    off = np.broadcast_to(earlier[:, :, None, None], (k, k, c, c)).astype(np.float32)
    centre = np.zeros((k, k, c, c), np.float32)
    centre[r, r] = np.triu(np.ones((c, c), np.float32), 1)  # [i, o] with i < o
    return off, centre


def _kernel(weights: Array, diag: Array) -> tuple[Array, Array]:
    """(masked k x k kernel with the diagonal at the centre, its C x C centre matrix M).

    At the centre, out[o] = sum_i M[i, o] x[i] with M upper triangular (i <= o): the centre's
    map is M^T, lower triangular with diagonal ``diag``.
    """
    k, c = weights.shape[0], weights.shape[-1]
    off, centre = _masks(k, c)
    centre_matrix = weights[k // 2, k // 2] * jnp.asarray(centre[k // 2, k // 2], weights.dtype)
    centre_matrix = centre_matrix + jnp.diag(diag)
    kernel = weights * jnp.asarray(off, weights.dtype)
    kernel = kernel.at[k // 2, k // 2].set(centre_matrix)
    return kernel, centre_matrix


def _conv(x: Array, kernel: Array) -> Array:
    """'SAME' zero-padded cross-correlation of one (H, W, C) image with an HWIO kernel."""
    return conv2d(x[None], kernel, "SAME")[0]


def _solve(y: Array, kernel: Array, centre_matrix: Array, unit_diagonal: bool) -> Array:
    """x with _conv(x, kernel) = y, pixel by pixel in raster order (lax.fori_loop)."""
    h, w, c = y.shape
    k = kernel.shape[0]
    r = k // 2
    off = kernel.at[r, r].set(jnp.zeros((c, c), kernel.dtype))
    lower = centre_matrix.T  # the centre's map, lower triangular

    def body(p, x_pad):
        i, j = p // w, p % w
        patch = jax.lax.dynamic_slice(x_pad, (i, j, 0), (k, k, c))  # later pixels still 0
        rhs = jax.lax.dynamic_slice(y, (i, j, 0), (1, 1, c))[0, 0] - jnp.einsum(
            "abi,abio->o", patch, off
        )
        xij = jsl.solve_triangular(lower, rhs, lower=True, unit_diagonal=unit_diagonal)
        return jax.lax.dynamic_update_slice(x_pad, xij[None, None], (i + r, j + r, 0))

    x_pad = jnp.zeros((h + 2 * r, w + 2 * r, c), y.dtype)
    x_pad = jax.lax.fori_loop(0, h * w, body, x_pad)
    return x_pad[r : r + h, r : r + w]


def _flip(x: Array) -> Array:
    return x[::-1, ::-1, ::-1]


def _rotation_centres(key, c: int, dtype) -> tuple[Array, Array, Array]:
    """Centre taps of A and B whose product B A is a random orthogonal C x C matrix.

    At the centre A's map is lower triangular L_A (diagonal exp(log_diag)) and B's is unit
    upper U_B (B works in the reversed channel order). With J the reversal and Q random
    orthogonal, the pivoted LU J Q J = P L U gives the orthogonal Q' = J P^T J Q = U_B L_0 with
    U_B = J L J (entries at most 1 in size: well conditioned) and L_0 = J U J. Q' D with
    D = diag(sign of L_0's diagonal) is orthogonal too, and L_A = L_0 D has a positive
    diagonal. Returns (kernel_a centre, log_diag, kernel_b centre) in `_kernel`'s layout (entry
    [i, o], i < o).
    """
    q = random_orthogonal(key, c, dtype)
    # l_rev is U_B in B's own (reversed) channel order: unit lower, B's centre map as it is
    _, l_rev, u_rev = jsl.lu(q[::-1, ::-1])
    l_0 = u_rev[::-1, ::-1]
    l_a = l_0 * jnp.sign(jnp.diag(l_0))[None, :]
    return l_a.T, jnp.log(jnp.abs(jnp.diag(l_a))), l_rev.T


def emerging_conv(kernel_size: int = 3, *, random_rotation: bool = True) -> Transform:
    """Emerging k x k convolution: two masked autoregressive convolutions, f = B o A.

    See the module docstring for the math and the cost. f(x) = B(A(x)) (two convs, one pass);
    log|det J_f| = H W sum(log_diag); g by two sequential substitutions over the H W pixels in
    a ``lax.fori_loop`` (for sampling). ``kernel_size = 1`` is an LU-parametrised 1x1
    convolution.

    Starts (``random_rotation=True``) with zero off-centre taps and centre taps whose product is
    a random orthogonal C x C matrix drawn from the init key (a 1x1 random rotation, Glow's
    init, which the training then grows into a k x k convolution); ``random_rotation=False``:
    the identity (zero kernels, log_diag = 0).

    Params: ``{"kernel_a": (k, k, C, C), "log_diag": (C,), "kernel_b": (k, k, C, C)}``; the
    masked-out entries are never read (their gradient is 0).

    Example:
        >>> t = emerging_conv(3); p = t.init(jax.random.key(0), jnp.zeros((4, 4, 2)))
        >>> z, logdet = t.apply(p, jnp.ones((4, 4, 2)))
    """
    positive_int(kernel_size, "emerging_conv: kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"emerging_conv: kernel_size must be odd, got {kernel_size}")
    k = kernel_size

    def init(key, x_example):
        _, _, c = check_image(x_example, "emerging_conv.init")
        dtype = x_example.dtype
        zeros = jnp.zeros((k, k, c, c), dtype)
        if not random_rotation:
            return {"kernel_a": zeros, "log_diag": jnp.zeros((c,), dtype), "kernel_b": zeros}
        centre_a, log_diag, centre_b = _rotation_centres(key, c, dtype)
        r = k // 2
        return {
            "kernel_a": zeros.at[r, r].set(centre_a),
            "log_diag": log_diag,
            "kernel_b": zeros.at[r, r].set(centre_b),
        }

    def kernels(params, x, where):
        check_image(x, where)
        expected = jax.eval_shape(init, jax.random.key(0), x)
        check_params(params, expected, where)
        a = _kernel(params["kernel_a"], jnp.exp(params["log_diag"]))
        b = _kernel(params["kernel_b"], jnp.ones_like(params["log_diag"]))
        logdet = (x.shape[0] * x.shape[1]) * jnp.sum(params["log_diag"])
        return a, b, logdet

    def apply(params, x, *, context=None):
        del context
        (ka, _), (kb, _), logdet = kernels(params, x, "emerging_conv.apply")
        return _flip(_conv(_flip(_conv(x, ka)), kb)), logdet

    def inverse(params, z, *, context=None):
        del context
        (ka, ma), (kb, mb), logdet = kernels(params, z, "emerging_conv.inverse")
        y = _flip(_solve(_flip(z), kb, mb, unit_diagonal=True))
        return _solve(y, ka, ma, unit_diagonal=False), -logdet

    return Transform(init, apply, inverse)
