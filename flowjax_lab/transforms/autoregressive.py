"""Autoregressive layers: MAF (one-pass density) and IAF (one-pass sampling) on a MADE.

Both share one parametrisation: a MADE conditioner gives, for every dimension i, the raw
transformer params theta_i(x_<i, c) from the dimensions that come before i in ``order`` (and
the context c), and f(x)_i = tau(x_i; theta_i). The Jacobian of f is triangular in ``order``,
so log|det J_f| = sum_i log tau'(x_i; theta_i).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax_lab.core import Transform, as_key, check_vector_event, invert
from flowjax_lab.nets import MADE, made_sequential_solve
from flowjax_lab.transforms.spline import make_transformer

Array = jax.Array

OUT_INIT_RELATIVE = 1e-3  # conditioner output kernels start at 1e-3 x the LeCun std


# --------------------------------------------------------------------------- shared helpers


def out_init_scale(fan_in: int) -> float:
    """Std of a conditioner's output kernel at init: 1e-3 of LeCun's ``1 / sqrt(fan_in)``.

    Small, so a deep flow starts near the identity (12 layers with 2 x 64 nets: log_prob within
    ~0.1 nat of the base's; at LeCun scale a 12-layer NSF starts ~40 nats off), but not zero,
    so every layer of the conditioner gets gradient from the first step.
    """
    return OUT_INIT_RELATIVE / math.sqrt(max(fan_in, 1))


def check_context(context, context_dim: int, dtype, where: str) -> Array | None:
    """The context as a (context_dim,) array of ``dtype``; None when context_dim == 0.

    Unconditional layers ignore any context (combinators pass it to every layer); conditional
    ones need exactly one vector of length ``context_dim``.
    """
    if context_dim == 0:
        return None
    if context is None:
        raise ValueError(
            f"{where}: expected a context of shape ({context_dim},) (context_dim="
            f"{context_dim}), got None"
        )
    context = jnp.asarray(context)
    if context.shape != (context_dim,):
        raise ValueError(
            f"{where}: expected a context of shape ({context_dim},), got shape "
            f"{tuple(context.shape)} (one context vector per event; vmap for batches)"
        )
    return context.astype(dtype)


def check_params(params, expected, where: str) -> None:
    """Raise a ValueError unless ``params`` has the tree structure and shapes of ``expected``."""
    got = jax.tree.map(lambda a: tuple(jnp.shape(a)), params)
    want = jax.tree.map(lambda a: tuple(a.shape), expected)
    if got != want:
        raise ValueError(f"{where}: params have shapes {got}, expected {want}")


def check_inputs(params, x, context, context_dim: int, expected_params, where: str):
    """(d, context) after checking the event x, then the context, then that ``params`` match
    ``expected_params(d, dtype)`` (a tree of ShapeDtypeStructs); errors name ``where``."""
    d = check_vector_event(x, where)
    ctx = check_context(context, context_dim, x.dtype, where)
    check_params(params, expected_params(d, x.dtype), where)
    return d, ctx


# --------------------------------------------------------------------------- MAF / IAF


def maf(
    hidden: Sequence[int] = (64, 64),
    transformer: str = "affine",
    bins: int = 8,
    bound: float = 3.0,
    context_dim: int = 0,
    order: Sequence[int] | None = None,
    activation: Callable[[Array], Array] = nn.relu,
) -> Transform:
    """Masked autoregressive flow layer (Papamakarios et al. 2017): one-pass density.

    With ``theta_i = MADE(x_<i, c)`` (``<`` in ``order``: dimension j precedes i when
    ``order[j] < order[i]``; default the identity order):

    * affine: f(x)_i = z_i = (x_i - mu_i) exp(-s_i), s_i = 5 tanh(raw_i / 5);
      g(z)_i = x_i = z_i exp(s_i) + mu_i; log|det J_f| = -sum_i s_i.
    * spline: z_i = RQS(x_i; theta_i) (K bins on [-B, B], identity tails);
      log|det J_f| = sum_i log RQS'(x_i; theta_i).

    Cost: ``apply`` (f, density) is ONE MADE pass; ``inverse`` (g, sampling) is d sequential
    steps, step r fixing the dimension of rank r (`nets.made_sequential_solve`: one
    ``lax.fori_loop``, so compile size does not grow with d). Each step computes only the hidden
    units of degree r, the others being kept from earlier steps, so the d steps together cost
    about the FLOPs of ONE MADE pass, not d passes. Params: ``{"made": <flax params of nets.MADE>}`` (``hidden_l``/
    ``context_l``/``output``/``context_output``), the output kernels at 1e-3 x LeCun scale
    (near identity).

    Args:
        hidden: MADE hidden widths (use >= d - 1).
        transformer: ``"affine"``, ``"spline"`` or a `Transformer` value (``sos_transformer``,
            ``dsf_transformer``, your own from ``numerical_transformer``); one without a closed
            inverse makes the d-step inverse solve each step numerically.
        bins: spline bins K (MADE gives 3K - 1 raw params per dimension).
        bound: spline interval [-B, B].
        context_dim: length of the context vector (0: unconditional, context ignored).
        order: autoregressive order, a permutation of range(d) (rank of each dimension).
        activation: MADE hidden nonlinearity.

    Example:
        >>> t = maf(hidden=(16, 16)); p = t.init(jax.random.key(0), jnp.zeros(3))
        >>> z, logdet = t.apply(p, jnp.ones(3))
    """
    tr = make_transformer(transformer, bins, bound)
    hidden = tuple(int(w) for w in hidden)
    if context_dim < 0:
        raise ValueError(f"maf: context_dim must be >= 0, got {context_dim}")
    order = None if order is None else tuple(int(i) for i in order)

    @functools.cache
    def made(d: int) -> MADE:
        return MADE(
            hidden=hidden,
            num_params=tr.num_params,
            order=order,
            context_dim=context_dim,
            activation=activation,
            out_init_scale=out_init_scale(hidden[-1] if hidden else d),
        )

    def init(key, x_example):
        d = check_vector_event(x_example, "maf.init")
        ctx = jnp.zeros((context_dim,), x_example.dtype) if context_dim else None
        return {"made": made(d).init(as_key(key), x_example, ctx)["params"]}

    @functools.cache
    def expected_params(d: int, dtype):
        return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct((d,), dtype))

    def checked(params, x, context, where):
        return check_inputs(params, x, context, context_dim, expected_params, where)

    def apply(params, x, *, context=None):
        d, ctx = checked(params, x, context, "maf.apply")
        z, log_det = tr.forward(x, made(d).apply({"params": params["made"]}, x, ctx))
        return z, jnp.sum(log_det)

    def inverse(params, z, *, context=None):
        d, ctx = checked(params, z, context, "maf.inverse")
        return made_sequential_solve(made(d), params["made"], z, ctx, tr.inverse)

    return Transform(init, apply, inverse)


def iaf(
    hidden: Sequence[int] = (64, 64),
    transformer: str = "affine",
    bins: int = 8,
    bound: float = 3.0,
    context_dim: int = 0,
    order: Sequence[int] | None = None,
    activation: Callable[[Array], Array] = nn.relu,
) -> Transform:
    """Inverse autoregressive flow layer (Kingma et al. 2016): one-pass sampling.

    ``core.invert(maf(...))``: the same MADE parametrisation with the directions swapped, so
    the generative map is autoregressive in the noise: g(z)_i = x_i = (z_i - mu_i(z_<i))
    exp(-s_i(z_<i)) (affine), log|det J_g| = -sum_i s_i; f = g^-1.

    Cost: ``inverse`` (g, sampling, reverse KL) is ONE MADE pass; ``apply`` (f, density of
    outside data) is d sequential passes. Params and arguments as in `maf`.
    """
    return invert(maf(hidden, transformer, bins, bound, context_dim, order, activation))
