"""The conformance checker every transform must pass; users run it on their own layers."""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.core import Transform, as_key, combine, is_trainable, partition

_TOLERANCES = {np.dtype("float32"): (2e-4, 2e-4), np.dtype("float64"): (1e-9, 1e-9)}


def _close(what: str, got, want, atol: float, rtol: float) -> None:
    try:
        chex.assert_trees_all_close(got, want, atol=atol, rtol=rtol)
    except AssertionError as err:
        diff = max(
            float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0))
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))
        )
        raise AssertionError(
            f"{what}: max abs error {diff:.3g} (atol={atol}, rtol={rtol})"
        ) from err


def randomize_params(key, params, scale: float = 0.3):
    """Add N(0, scale^2) noise to every float leaf (integer structure stays as drawn)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(as_key(key), max(len(leaves), 1))
    noisy = [
        leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) if is_trainable(leaf) else leaf
        for leaf, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(tree, noisy)


def _flat_logdet(fn, v):
    """log|det| of the Jacobian of ``fn`` (event -> event) on the flattened event."""
    jac = jax.jacfwd(lambda u: fn(u.reshape(v.shape)).reshape(-1))(v.reshape(-1))
    return jnp.linalg.slogdet(jac)[1]


def check_transform(
    t: Transform,
    x_example: jax.Array,
    *,
    key: jax.Array,
    atol: float | None = None,
    rtol: float | None = None,
    context_dim: int = 0,
    num_events: int = 3,
    param_scale: float = 0.3,
    sample_x: Callable | None = None,
    sample_z: Callable | None = None,
    params=None,
) -> None:
    """Check a transform on random params and inputs; raise AssertionError naming what failed.

    Checks: inverse(apply(x)) = x and apply(inverse(z)) = z; log-dets of apply and inverse equal
    ``slogdet(jax.jacfwd(...))`` of the flattened event and are negatives of each other; jit
    gives the same results; vmap over events equals a Python loop; grad of the log-det and
    output wrt the (float) params is finite. Inputs default to N(0, 1) events in the dtype of
    ``x_example``; ``sample_x(key, shape, dtype)`` / ``sample_z`` draw from a layer's domain.
    Params are ``t.init`` with N(0, param_scale^2) noise on every float leaf, unless given.
    """
    dtype = np.dtype(x_example.dtype)
    default_atol, default_rtol = _TOLERANCES.get(dtype, (1e-4, 1e-4))
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    k_init, k_noise, k_x, k_z, k_c = jax.random.split(as_key(key), 5)
    if params is None:
        params = randomize_params(k_noise, t.init(k_init, x_example), param_scale)
    normal = lambda k, s, d: jax.random.normal(k, s, d)  # noqa: E731
    shape = (num_events, *x_example.shape)
    xs = (sample_x or normal)(k_x, shape, dtype)
    zs0 = (sample_z or normal)(k_z, shape, dtype)
    ctx = (
        jax.random.normal(k_c, (num_events, context_dim), dtype)
        if context_dim
        else [None] * num_events
    )

    def apply(p, x, c):
        return t.apply(p, x, context=c)

    def inverse(p, z, c):
        return t.inverse(p, z, context=c)

    c_axis = 0 if context_dim else None
    c_all = ctx if context_dim else None
    trainable, fixed = partition(params)

    def per_event(p, x, z0, c):
        z, ld = apply(p, x, c)
        x_back, ld_back = inverse(p, z, c)
        x0, ld0 = inverse(p, z0, c)
        z_back, _ = apply(p, x0, c)
        jac_ld = _flat_logdet(lambda v: apply(p, v, c)[0], x)
        jac_ld0 = _flat_logdet(lambda v: inverse(p, v, c)[0], z0)
        return dict(
            z=z,
            ld=ld,
            x_back=x_back,
            ld_back=ld_back,
            x0=x0,
            ld0=ld0,
            z_back=z_back,
            jac_ld=jac_ld,
            jac_ld0=jac_ld0,
        )

    def objective(tr, fn, events):
        out, ld = jax.vmap(fn, (None, 0, c_axis))(combine(tr, fixed), events, c_all)
        return jnp.sum(ld) + jnp.sum(jnp.sin(out))

    @jax.jit
    def run(p, xs, zs0):
        # A loop over events (lax.map runs them one at a time) against vmap, plus grads.
        if context_dim:
            loop = jax.lax.map(lambda a: per_event(p, *a), (xs, zs0, ctx))
        else:
            loop = jax.lax.map(lambda a: per_event(p, a[0], a[1], None), (xs, zs0))
        vm_apply = jax.vmap(apply, (None, 0, c_axis))(p, xs, c_all)
        vm_inverse = jax.vmap(inverse, (None, 0, c_axis))(p, zs0, c_all)
        tr = partition(p)[0]
        grads = {
            name: jax.grad(objective)(tr, fn, ev)
            for name, fn, ev in (("apply", apply, xs), ("inverse", inverse, zs0))
        }
        return loop, vm_apply, vm_inverse, grads

    loop, vm_apply, vm_inverse, grads = run(params, xs, zs0)
    chex.assert_shape(loop["ld"], (num_events,))
    chex.assert_type([loop["z"], loop["ld"], loop["x0"], loop["ld0"]], dtype)
    _close("inverse(apply(x)) == x", loop["x_back"], xs, atol, rtol)
    _close("inverse log-det == -apply log-det", loop["ld_back"], -loop["ld"], atol, rtol)
    _close("apply log-det == slogdet(jacfwd(apply))", loop["ld"], loop["jac_ld"], atol, rtol)
    _close("apply(inverse(z)) == z", loop["z_back"], zs0, atol, rtol)
    _close("inverse log-det == slogdet(jacfwd(inverse))", loop["ld0"], loop["jac_ld0"], atol, rtol)
    _close("vmap(apply) == loop of apply", vm_apply, (loop["z"], loop["ld"]), atol, rtol)
    _close("vmap(inverse) == loop of inverse", vm_inverse, (loop["x0"], loop["ld0"]), atol, rtol)
    eager_apply = apply(params, xs[0], ctx[0])
    eager_inverse = inverse(params, zs0[0], ctx[0])
    _close("jit(apply) == apply", (loop["z"][0], loop["ld"][0]), eager_apply, atol, rtol)
    _close("jit(inverse) == inverse", (loop["x0"][0], loop["ld0"][0]), eager_inverse, atol, rtol)
    for name, g in grads.items():
        bad = [leaf for leaf in jax.tree.leaves(g) if not bool(jnp.all(jnp.isfinite(leaf)))]
        if bad:
            raise AssertionError(f"grad of {name} wrt params is not finite in {len(bad)} leaves")
