"""Coupling layers (Dinh et al. 2017, RealNVP; Durkan et al. 2019, NSF): one pass both ways.

The dimensions are split by a fixed boolean mask into a conditioning part x_A (mask True,
passed through unchanged) and a transformed part x_B. An MLP conditioner maps [x_A; c] to the
raw transformer params theta of every dimension of B:

    f(x)_A = x_A,  f(x)_B = tau(x_B; theta(x_A, c)),  log|det J_f| = sum_{i in B} log tau'(x_i),

and g inverts tau with the same theta, since x_A = z_A. Alternate masks (or put permutations
between layers) so that every dimension gets transformed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.core import Transform, as_key, check_vector_event
from flowjax_lab.nets import MLP
from flowjax_lab.transforms.autoregressive import (
    check_context,
    check_params,
    out_init_scale,
)
from flowjax_lab.transforms.spline import Transformer, make_transformer

Array = jax.Array


class _Layout:
    """Static split of d dimensions into conditioning (A) and transformed (B) index sets.

    A prefix split (the default) uses slices and a concatenation; any other mask uses
    constant-index gathers.
    """

    def __init__(self, mask, d: int, where: str):
        if d < 2:
            raise ValueError(
                f"{where}: a coupling layer needs at least 2 dimensions (one to condition on, "
                f"one to transform), got d = {d}"
            )
        if mask is None:
            m = np.arange(d) < d // 2
        else:
            m = np.asarray(mask)
            if m.dtype != bool or m.shape != (d,):
                raise ValueError(
                    f"{where}: mask must be a boolean array of shape ({d},) (True = "
                    f"conditioning), got dtype {m.dtype} and shape {m.shape}"
                )
        if m.all() or not m.any():
            raise ValueError(
                f"{where}: mask needs at least one True (conditioning) and one False "
                f"(transformed) entry, got {m.tolist()}"
            )
        self.cond = np.flatnonzero(m)
        self.trans = np.flatnonzero(~m)
        self.k = self.cond.size
        self.prefix = bool(np.array_equal(self.cond, np.arange(self.k)))
        self.unperm = np.argsort(np.concatenate([self.cond, self.trans]))

    def split(self, x: Array) -> tuple[Array, Array]:
        if self.prefix:
            return x[: self.k], x[self.k :]
        return x[self.cond], x[self.trans]

    def merge(self, xa: Array, yb: Array) -> Array:
        y = jnp.concatenate([xa, yb])
        return y if self.prefix else y[self.unperm]


def _coupling(
    name: str,
    tr: Transformer,
    hidden: Sequence[int],
    mask,
    context_dim: int,
    activation: Callable[[Array], Array],
    features: Callable[[Array], Array] | None = None,
) -> Transform:
    hidden = tuple(int(w) for w in hidden)
    if features is not None and not callable(features):
        raise ValueError(f"{name}: features must be a function x_A -> vector, got {features!r}")
    embed = features if features is not None else (lambda xa: xa)
    if context_dim < 0:
        raise ValueError(f"{name}: context_dim must be >= 0, got {context_dim}")
    mask = None if mask is None else tuple(np.asarray(mask).tolist())  # hashable, frozen

    @functools.cache
    def parts(d: int) -> tuple[_Layout, MLP]:
        layout = _Layout(None if mask is None else np.asarray(mask), d, name)
        width = jax.eval_shape(embed, jax.ShapeDtypeStruct((layout.k,), jnp.float32)).shape[0]
        fan_in = hidden[-1] if hidden else width + context_dim
        net = MLP(hidden, layout.trans.size * tr.num_params, activation, out_init_scale(fan_in))
        return layout, net

    def init(key, x_example):
        d = check_vector_event(x_example, f"{name}.init")
        layout, net = parts(d)
        ctx = jnp.zeros((context_dim,), x_example.dtype) if context_dim else None
        xa = layout.split(x_example)[0]
        return {"conditioner": net.init(as_key(key), embed(xa), ctx)["params"]}

    @functools.cache
    def expected_params(d: int, dtype):
        return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((d,), dtype))

    def split(params, x, context, where):
        d = check_vector_event(x, where)
        ctx = check_context(context, context_dim, x.dtype, where)
        check_params(params, expected_params(d, x.dtype), where)
        layout, net = parts(d)
        xa, xb = layout.split(x)
        raw = net.apply({"params": params["conditioner"]}, embed(xa), ctx)
        return xa, xb, raw.reshape(xb.shape[0], tr.num_params), layout.merge

    return coupling_transform(name, tr, init, split)


def coupling_transform(name: str, tr: Transformer, init, split) -> Transform:
    """The coupling Transform from ``split(params, x, context, where) -> (x_A, x_B, theta,
    merge)``: z_B = tau(x_B; theta), z = merge(x_A, z_B); g inverts tau with the same theta
    (``split`` of z gives z_A = x_A). Shared by the vector and image couplings."""

    def run(params, x, context, where, fn):
        xa, xb, raw, merge = split(params, x, context, where)
        yb, log_det = fn(xb, raw)
        return merge(xa, yb), jnp.sum(log_det)

    def apply(params, x, *, context=None):
        return run(params, x, context, f"{name}.apply", tr.forward)

    def inverse(params, z, *, context=None):
        return run(params, z, context, f"{name}.inverse", tr.inverse)

    return Transform(init, apply, inverse)


def affine_coupling(
    hidden: Sequence[int] = (64, 64),
    mask: Sequence[bool] | None = None,
    context_dim: int = 0,
    activation: Callable[[Array], Array] = nn.relu,
) -> Transform:
    """Affine (RealNVP) coupling: z_B = (x_B - mu(x_A, c)) exp(-s(x_A, c)), z_A = x_A.

    ``s = 5 tanh(raw / 5)`` (bounded log-scale). g: x_B = z_B exp(s(z_A, c)) + mu(z_A, c).
    log|det J_f| = -sum_B s. One conditioner pass each way.

    Args:
        hidden: MLP hidden widths.
        mask: boolean (d,), True = conditioning dimension; default the first d // 2 (for odd
            d the transformed part is the larger one). d = 1 is an error.
        context_dim: length of the context vector (0: unconditional, context ignored).
        activation: MLP hidden nonlinearity.

    Params: ``{"conditioner": <flax params of nets.MLP>}`` (``hidden_l``, ``output``), the
    output kernel at 1e-3 x LeCun scale (near identity).

    Example:
        >>> t = affine_coupling(hidden=(16,)); p = t.init(jax.random.key(0), jnp.zeros(4))
        >>> z, logdet = t.apply(p, jnp.ones(4))
    """
    return _coupling(
        "affine_coupling", make_transformer("affine"), hidden, mask, context_dim, activation
    )


def coupling(
    transformer: str | Transformer,
    hidden: Sequence[int] = (64, 64),
    mask: Sequence[bool] | None = None,
    context_dim: int = 0,
    activation: Callable[[Array], Array] = nn.relu,
    features: Callable[[Array], Array] | None = None,
) -> Transform:
    """Coupling with any elementwise transformer: z_B = tau(x_B; theta(x_A, c)), z_A = x_A.

    ``transformer``: a name of `make_transformer` or a `Transformer` (``sos_transformer``,
    ``dsf_transformer``, ``numerical_transformer(...)``, a user's own). log|det J_f| = sum_B
    log tau'(x_i). One conditioner pass each way; the inverse costs what ``transformer.inverse``
    costs (closed form, or a numerical solve of every element at once). Mask, context and params
    as in `affine_coupling`. ``features``: what the conditioner sees of x_A (default x_A itself;
    ``angle_features`` = [cos x_A, sin x_A] for angles, with ``circular_spline_transformer``).
    """
    return _coupling(
        "coupling", make_transformer(transformer), hidden, mask, context_dim, activation, features
    )


def spline_coupling(
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 3.0,
    mask: Sequence[bool] | None = None,
    context_dim: int = 0,
    activation: Callable[[Array], Array] = nn.relu,
) -> Transform:
    """Rational-quadratic spline coupling (NSF): z_B = RQS(x_B; theta(x_A, c)), z_A = x_A.

    K ``bins`` on [-``bound``, ``bound``], identity tails; the conditioner gives 3K - 1 raw
    params per transformed dimension. g: the exact RQS inverse with the same theta.
    log|det J_f| = sum_B log RQS'(x_i). One conditioner pass each way, O(K) per dimension.
    Mask, context and params as in `affine_coupling`.
    """
    return _coupling(
        "spline_coupling",
        make_transformer("spline", bins, bound),
        hidden,
        mask,
        context_dim,
        activation,
    )
