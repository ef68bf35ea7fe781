"""Conditioner networks (flax.linen) for coupling and autoregressive flows.

* `MLP`: a dense net, ``y = W_L σ(... σ(W_1 [x; c] + b_1) ...) + b_L``.
* `MADE` (Germain et al. 2015): a masked dense net whose outputs for dimension ``i`` depend only
  on the inputs that come before ``i`` in ``order``, so one pass gives the parameters of every
  autoregressive conditional.
* `ConvNet`: Glow's convolutional conditioner for image couplings, conv k x k -> conv 1x1 ->
  conv k x k, on one (H, W, C) event.

Both start with a zero output layer, so a flow layer that maps zero parameters to the identity
starts as the identity. Params take the dtype of the input (float64 under ``JAX_ENABLE_X64``).
Masks are numpy constants built from static shapes: they live in the code, never in params.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .convolution import conv_general_dilated

Array = jax.Array
Activation = Callable[[Array], Array]
Initializer = Callable[..., Array]

__all__ = [
    "ConvNet",
    "MADE",
    "MLP",
    "MaskedDense",
    "degree_mask",
    "made_degrees",
    "made_masks",
    "made_sequential_solve",
]


def _param_dtype(x: Array) -> jnp.dtype:
    """Floating dtype for params: the input's float dtype (at least float32)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _output_kernel_init(scale: float) -> Initializer:
    """Zeros when ``scale == 0`` (identity start), else N(0, scale^2)."""
    if scale < 0:
        raise ValueError(f"out_init_scale must be >= 0, got {scale}")
    return nn.initializers.normal(stddev=scale) if scale > 0 else nn.initializers.zeros


def _check_order(order: Sequence[int] | None, d: int) -> np.ndarray:
    """``order`` as an int array, checked to be a permutation of range(d)."""
    if order is None:
        return np.arange(d)
    arr = np.asarray(order, dtype=int)
    if arr.shape != (d,) or not np.array_equal(np.sort(arr), np.arange(d)):
        raise ValueError(f"order must be a permutation of range({d}), got {list(order)}")
    return arr


def made_degrees(
    d: int, hidden: Sequence[int], order: Sequence[int] | None = None
) -> tuple[np.ndarray, ...]:
    """Degrees of the input and hidden units of a MADE.

    Input ``j`` has degree ``order[j] + 1`` in {1..d}. Hidden layers get the degrees
    {1..d-1} ({0} when d = 1) in turn, ``arange(width) % max(1, d - 1)``, sorted ascending
    (+1), so every degree occurs when ``width >= d - 1`` and the units of degree <= m are a
    prefix of the layer (`made_sequential_solve` slices them). A unit of degree m may depend only on
    inputs of degree <= m. Deterministic; cost O(d + sum(hidden)).

    Args:
        d: event dimension (>= 1).
        hidden: widths of the hidden layers (each >= 1).
        order: input degrees, a permutation of range(d); default the identity order.

    Returns:
        ``(input_degrees, hidden_1_degrees, ..., hidden_L_degrees)``, int numpy arrays.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if any(w < 1 for w in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {tuple(hidden)}")
    degrees = [_check_order(order, d) + 1]
    for width in hidden:
        degrees.append(np.sort(np.arange(width) % max(1, d - 1)) + min(1, d - 1))
    return tuple(degrees)


def degree_mask(in_degrees: Sequence[int], out_degrees: Sequence[int], strict: bool) -> np.ndarray:
    """0/1 mask of shape (n_in, n_out): ``M[j, o] = [deg_out(o) >= deg_in(j)]``.

    With ``strict=True`` (output layer) the rule is ``deg_out(o) > deg_in(j)``.
    """
    d_in = np.asarray(in_degrees)[:, None]
    d_out = np.asarray(out_degrees)[None, :]
    return (d_out > d_in if strict else d_out >= d_in).astype(np.float32)


def made_masks(
    d: int, hidden: Sequence[int], num_params: int, order: Sequence[int] | None = None
) -> list[np.ndarray]:
    """The masks of a MADE, input to output: hidden masks use >=, the output mask uses >.

    The output layer has ``d * num_params`` units; unit ``i * num_params + k`` is parameter k of
    dimension i and has the degree of input i. The product of the masks is nonzero at (j, i·P+k)
    only if ``order[j] < order[i]``.
    """
    degrees = made_degrees(d, hidden, order)
    out_degrees = np.repeat(degrees[0], num_params)
    masks = [degree_mask(a, b, strict=False) for a, b in itertools.pairwise(degrees)]
    masks.append(degree_mask(degrees[-1], out_degrees, strict=True))
    return masks


class MaskedDense(nn.Module):
    """Dense layer ``y = x (W ⊙ M) + b`` with a fixed 0/1 mask ``M = degree_mask(...)``.

    The mask is a numpy constant rebuilt from the static degrees, never a param, so it is not
    trained. Cost O(n_in * n_out) per event (the mask saves no flops).

    Attributes:
        in_degrees: degree of each input unit.
        out_degrees: degree of each output unit.
        strict: use ``>`` (output layer) instead of ``>=`` (hidden layer).
        kernel_init: initialiser of W (shape (n_in, n_out)); ``bias_init`` of b.
        param_dtype: dtype of W and b.
    """

    in_degrees: tuple[int, ...]
    out_degrees: tuple[int, ...]
    strict: bool = False
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if x.shape[-1] != len(self.in_degrees):
            raise ValueError(f"expected {len(self.in_degrees)} input features, got {x.shape}")
        mask = degree_mask(self.in_degrees, self.out_degrees, self.strict)
        kernel = self.param("kernel", self.kernel_init, mask.shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (mask.shape[1],), self.param_dtype)
        return x @ (kernel * jnp.asarray(mask, kernel.dtype)) + bias


class MLP(nn.Module):
    """Dense conditioner ``y = W_L σ(... σ(W_1 [x; c] + b_1) ...) + b_L``.

    The output kernel starts at zero (or N(0, out_init_scale^2)) and the output bias at zero,
    so ``y = 0`` at init. Cost O(n_in h_1 + sum_l h_l h_{l+1} + h_L out_dim) per event.

    Attributes:
        hidden: hidden layer widths.
        out_dim: output features.
        activation: hidden nonlinearity σ.
        out_init_scale: std of the output kernel at init (0 gives exact zeros).

    Call ``MLP(...)(x, context=None)``: ``x`` is ``(..., n_x)``; ``context`` ``(..., n_c)``, if
    given, is broadcast against x's leading axes and concatenated to x. Returns
    ``(..., out_dim)``.

    Example:
        >>> net = MLP(hidden=(32, 32), out_dim=4)
        >>> params = net.init(jax.random.key(0), jnp.zeros(3))
        >>> net.apply(params, jnp.ones(3)).shape
        (4,)
    """

    hidden: Sequence[int]
    out_dim: int
    activation: Activation = nn.relu
    out_init_scale: float = 0.0

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None) -> Array:
        if context is not None:
            batch = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
            x = jnp.concatenate(
                [
                    jnp.broadcast_to(x, batch + x.shape[-1:]),
                    jnp.broadcast_to(context, batch + context.shape[-1:]),
                ],
                axis=-1,
            )
        dtype = _param_dtype(x)
        h = x
        for layer, width in enumerate(self.hidden):
            h = self.activation(nn.Dense(width, param_dtype=dtype, name=f"hidden_{layer}")(h))
        return nn.Dense(
            self.out_dim,
            kernel_init=_output_kernel_init(self.out_init_scale),
            bias_init=nn.initializers.zeros,
            param_dtype=dtype,
            name="output",
        )(h)


class ConvNet(nn.Module):
    """Glow's conditioner: ``y = conv_k(σ(conv_1(σ(conv_k([x; c])))))``, "SAME" zero padding.

    Input ``x`` is one image ``(H, W, C_x)`` (or a batch ``(n, H, W, C_x)``); ``context``, if
    given, is a per-pixel ``(H, W, C_c)`` image or one vector ``(C_c,)`` broadcast to every pixel,
    concatenated to x's channels. The last conv starts at zero (kernel and bias), so ``y = 0`` at
    init and a coupling that maps zero params to the identity starts as the identity. Cost per
    event O(HW (k^2 C_in h + h^2 + k^2 h out_channels)).

    Attributes:
        hidden_channels: width h of the two hidden convs; 0 leaves them out (one zero conv).
        out_channels: output channels.
        kernel_size: k of the first and last convs (odd); the middle one is 1x1.
        activation: hidden nonlinearity σ.
    """

    hidden_channels: int
    out_channels: int
    kernel_size: int = 3
    activation: Activation = nn.relu

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None) -> Array:
        if context is not None:
            context = jnp.asarray(context, x.dtype)  # (C_c,) or per pixel, broadcast
            context = jnp.broadcast_to(context, (*x.shape[:-1], context.shape[-1]))
            x = jnp.concatenate([x, context], axis=-1)
        dtype = _param_dtype(x)
        k = (self.kernel_size, self.kernel_size)
        # convolution.conv_general_dilated: gradients that stay fast inside lax.scan on CPU
        conv = dict(param_dtype=dtype, conv_general_dilated=conv_general_dilated)
        h = x
        if self.hidden_channels:  # 0: the zero-initialised output conv alone (Glow's split prior)
            conv_in = nn.Conv(self.hidden_channels, k, name="conv_in", **conv)
            conv_mid = nn.Conv(self.hidden_channels, (1, 1), name="conv_mid", **conv)
            h = self.activation(conv_mid(self.activation(conv_in(h))))
        return nn.Conv(
            self.out_channels,
            k,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            name="output",
            **conv,
        )(h)


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    Hidden layer l is ``h_l = σ(h_{l-1} (W_l ⊙ M_l) + b_l + U_l c)`` and the output is
    ``y = h_L (W ⊙ M) + b + U c``, with masks from unit degrees (see `made_degrees`): for input
    unit j and output unit u, ``M[j, u] = [deg(u) >= deg(j)]`` in hidden layers and
    ``[deg(u) > deg(j)]`` in the output layer. Hence ``y[i, k]`` depends on ``x[j]`` only if ``order[j] < order[i]``; the
    context c (length ``context_dim``) enters every layer unmasked, so every output may see it.
    For d = 1 the output depends only on context and bias.

    Output layout: ``y[..., i, k]`` = parameter k of dimension i, shape ``(..., d, num_params)``
    for x of shape ``(..., d)`` (single event ``(d,)`` or batch ``(n, d)``).

    Cost: one pass, O(d h_1 + sum_l h_l h_{l+1} + h_L d P + c (sum_l h_l + d P)) per event,
    with P = num_params and c = context_dim.

    Attributes:
        hidden: hidden layer widths; use width >= d - 1 so every conditional gets capacity.
        num_params: outputs per dimension P (2 for shift and log-scale, 3K - 1 for a K-bin
            spline).
        order: input degrees, a permutation of range(d); default identity (x[i] sees x[:i]).
        context_dim: length of the context vector (0: unconditional).
        activation: hidden nonlinearity σ.
        out_init_scale: std of the output kernels at init (0 gives exact zeros, y = 0).

    Example:
        >>> made = MADE(hidden=(16, 16), num_params=2)
        >>> params = made.init(jax.random.key(0), jnp.zeros(3))
        >>> made.apply(params, jnp.ones(3)).shape
        (3, 2)
    """

    hidden: Sequence[int]
    num_params: int
    order: Sequence[int] | None = None
    context_dim: int = 0
    activation: Activation = nn.relu
    out_init_scale: float = 0.0

    def _check_context(self, context: Array | None) -> None:
        if self.context_dim == 0 and context is not None:
            raise ValueError(f"context given ({context.shape}) but context_dim=0")
        if self.context_dim > 0:
            if context is None:
                raise ValueError(f"context_dim={self.context_dim} but no context given")
            if context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"expected context of length {self.context_dim}, got {context.shape}"
                )

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None) -> Array:
        if x.ndim < 1:
            raise ValueError(f"x must have shape (..., d), got {x.shape}")
        if self.num_params < 1:
            raise ValueError(f"num_params must be >= 1, got {self.num_params}")
        self._check_context(context)
        d = x.shape[-1]
        degrees = [tuple(int(v) for v in deg) for deg in made_degrees(d, self.hidden, self.order)]
        out_degrees = tuple(v for v in degrees[0] for _ in range(self.num_params))
        dtype = _param_dtype(x)
        out_init = _output_kernel_init(self.out_init_scale)

        h = x
        for layer, (deg_in, deg_out) in enumerate(itertools.pairwise(degrees)):
            h = MaskedDense(deg_in, deg_out, param_dtype=dtype, name=f"hidden_{layer}")(h)
            if context is not None:
                h = h + nn.Dense(
                    len(deg_out), use_bias=False, param_dtype=dtype, name=f"context_{layer}"
                )(context)
            h = self.activation(h)
        y = MaskedDense(
            degrees[-1],
            out_degrees,
            strict=True,
            kernel_init=out_init,
            param_dtype=dtype,
            name="output",
        )(h)
        if context is not None:
            y = y + nn.Dense(
                len(out_degrees),
                use_bias=False,
                kernel_init=out_init,
                param_dtype=dtype,
                name="context_output",
            )(context)
        return y.reshape(*y.shape[:-1], d, self.num_params)


# --------------------------------------------------------------------------- sequential passes


def made_sequential_solve(
    made: MADE,
    params,
    z: Array,
    context: Array | None,
    solve_one: Callable[[Array, Array], tuple[Array, Array]],
) -> tuple[Array, Array]:
    """Solve ``z_i = tau(x_i; theta_i(x_<i))`` for x, one dimension per step in ``made.order``.

    Step r fixes the dimension of rank r: x_i = tau^-1(z_i; theta_i) by ``solve_one``, with
    theta_i the MADE's output for that dimension. It reads the hidden units of degree <= r, and
    all of those except the ones of degree exactly r were computed at earlier steps from exact
    inputs (a unit of degree m reads only inputs of rank < m). So step r computes only a
    window of each hidden layer holding its degree-r units (about h_l / (d - 1) of them) and the
    P outputs of dimension i, from layer buffers carried by a ``lax.fori_loop``; a window also
    covering units of other degrees is harmless (lower ones are recomputed from exact inputs,
    higher ones are rewritten at their own step).

    Cost: d sequential steps (one compiled loop; program size does not grow with d) of
    O(d u_1 + sum_l h_l u_{l+1} + h_L P) each, u_l ~ h_l / (d - 1) the most units of one degree:
    together about ONE MADE pass of FLOPs, against d full passes for a plain fixed-point solve.

    Args:
        made: the module whose flax ``params`` (the ``"params"`` collection) are given.
        params: its params, as from ``made.init(...)["params"]``.
        z: the (d,) values to invert.
        context: the context vector, or None.
        solve_one: ``(z_i, theta_i) -> (x_i, log_det_i)`` with z_i, x_i of shape (1,) and
            theta_i of shape (1, P); log_det_i is summed into the returned log-det.

    Returns:
        ``(x, sum of log_det_i)``.
    """
    d, num_params = z.shape[0], made.num_params
    degrees = made_degrees(d, made.hidden, made.order)
    masks = made_masks(d, made.hidden, num_params, made.order)
    names = [f"hidden_{layer}" for layer in range(len(made.hidden))] + ["output"]
    kernels, biases = [], []
    for layer, (name, mask) in enumerate(zip(names, masks, strict=True)):
        kernel = params[name]["kernel"]
        kernels.append(kernel * jnp.asarray(mask, kernel.dtype))
        ctx_name = "context_output" if name == "output" else f"context_{layer}"
        bias = params[name]["bias"]
        biases.append(bias + context @ params[ctx_name]["kernel"] if context is not None else bias)
    windows = []  # per hidden layer: window width u and each step's start (degree r's first unit)
    for deg in degrees[1:]:
        u = int(np.bincount(deg).max())
        starts = np.minimum(np.searchsorted(deg, np.arange(d)), len(deg) - u)
        windows.append((u, jnp.asarray(starts, jnp.int32)))
    by_rank = jnp.asarray(np.argsort(degrees[0]), jnp.int32)  # position of the rank-r input

    def step(r, carry):
        x, hidden, log_det = carry
        h, new_hidden = x, []
        for (u, starts), kernel, bias, buffer in zip(
            windows, kernels[:-1], biases[:-1], hidden, strict=True
        ):
            start = starts[r]
            pre = h @ jax.lax.dynamic_slice_in_dim(kernel, start, u, axis=1)
            pre = pre + jax.lax.dynamic_slice_in_dim(bias, start, u)
            h = jax.lax.dynamic_update_slice_in_dim(buffer, made.activation(pre), start, axis=0)
            new_hidden.append(h)
        i = by_rank[r]
        theta = h @ jax.lax.dynamic_slice_in_dim(kernels[-1], i * num_params, num_params, axis=1)
        theta = theta + jax.lax.dynamic_slice_in_dim(biases[-1], i * num_params, num_params)
        x_i, ld = solve_one(jax.lax.dynamic_slice_in_dim(z, i, 1), theta.reshape(1, num_params))
        x = jax.lax.dynamic_update_slice_in_dim(x, x_i.astype(x.dtype), i, axis=0)
        return x, tuple(new_hidden), log_det + jnp.sum(ld)

    dtype = jnp.result_type(z, *kernels)  # of the hidden units and log-dets
    hidden = tuple(jnp.zeros(len(deg), dtype) for deg in degrees[1:])
    start = (jnp.zeros_like(z), hidden, jnp.zeros((), dtype))
    x, _, log_det = jax.lax.fori_loop(0, d, step, start)
    return x, log_det
