"""The conformance checker every transform must pass; users run it on their own layers."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.core import Transform, as_key, combine, is_trainable, partition
from flowjax_lab.flow import Flow, base_distribution

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


def _fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output of a flax kernel: (in, out) dense, (n, in, out) stacked dense,
    (..., kh, kw, in, out) conv (stacked or not)."""
    return int(np.prod(shape[-4:-1])) if len(shape) >= 4 else int(shape[-2])


def randomize_params(key, params, scale: float = 0.3, *, fan_in_relative: bool = False):
    """Add N(0, std^2) noise to every float leaf (integer structure stays as drawn).

    ``std = scale`` for every leaf; with ``fan_in_relative=True``, ``std = scale / sqrt(fan_in)``
    for leaves named ``"kernel"`` (LeCun's scale: ``scale = 1`` makes every weight, the
    conditioners' near-zero output layers included, as large as a freshly initialised hidden
    layer's, the size training reaches) and ``scale`` for the rest (biases, per-element params).
    """
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(as_key(key), max(len(leaves), 1))

    def std(path, leaf) -> float:
        last = path[-1] if path else None
        name = getattr(last, "key", getattr(last, "name", None))
        if fan_in_relative and name == "kernel" and jnp.ndim(leaf) >= 2:
            return scale / math.sqrt(_fan_in(jnp.shape(leaf)))
        return scale

    noisy = [
        leaf + std(path, leaf) * jax.random.normal(k, jnp.shape(leaf), jnp.asarray(leaf).dtype)
        if is_trainable(leaf)
        else leaf
        for (path, leaf), k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(tree, noisy)


def _tolerances(dtype, atol: float | None, rtol: float | None) -> tuple[float, float]:
    """(atol, rtol): the given ones, else the dtype's defaults."""
    default_atol, default_rtol = _TOLERANCES.get(np.dtype(dtype), (1e-4, 1e-4))
    return (default_atol if atol is None else atol), (default_rtol if rtol is None else rtol)


def _perturbed(key, init, param_scales, fan_in_relative: bool) -> list[tuple[str, object]]:
    """[(label, params)]: ``init`` perturbed by `randomize_params` at each scale."""
    keys = jax.random.split(key, len(param_scales))
    return [
        (f"param scale {scale}", randomize_params(k, init, scale, fan_in_relative=fan_in_relative))
        for scale, k in zip(param_scales, keys)
    ]


def _flat_logdet(fn, v):
    """log|det| of the Jacobian of ``fn`` (event -> event) on the flattened event."""
    jac = jax.jacfwd(lambda u: fn(u.reshape(v.shape)).reshape(-1))(v.reshape(-1))
    return jnp.linalg.slogdet(jac)[1]


PARAM_SCALES = (0.0, 0.05, 0.3, 1.0)
"""Default perturbation scales: the initial params (0.0), near them, and the size training
reaches; most layers are the identity or close to it at init, where many bugs cannot show."""


def check_transform(
    t: Transform,
    x_example: jax.Array,
    *,
    key: jax.Array,
    atol: float | None = None,
    rtol: float | None = None,
    context_dim: int = 0,
    num_events: int = 3,
    param_scales: Sequence[float] = PARAM_SCALES,
    fan_in_relative: bool = False,
    sample_x: Callable | None = None,
    sample_z: Callable | None = None,
    params=None,
    compiler_options: dict | None = None,
) -> None:
    """Check a transform at several params and random inputs; raise AssertionError naming what
    failed and at which param scale.

    Checks: inverse(apply(x)) = x and apply(inverse(z)) = z (both orders); log-dets of apply and
    inverse equal ``slogdet(jax.jacfwd(...))`` of the flattened event and are negatives of each
    other; jit gives the same results as eager calls (at the last params); vmap over events equals a loop; grad of
    the log-det and output wrt the (float) params is finite. Inputs default to N(0, 1) events
    in the dtype of ``x_example``; ``sample_x(key, shape, dtype)`` / ``sample_z`` draw from a
    layer's domain. Params are ``t.init`` with every float leaf perturbed by
    `randomize_params` at each of ``param_scales`` (0.0: the initial params), unless ``params``
    is given. All scales run through ONE compiled program (same shapes), so extra scales cost
    run time, not compile time. ``compiler_options`` go to that ``jax.jit`` (test suites pass
    ``{"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}``,
    which about halves compile time).
    """
    dtype = np.dtype(x_example.dtype)
    atol, rtol = _tolerances(dtype, atol, rtol)
    k_init, k_noise, k_x, k_z, k_c = jax.random.split(as_key(key), 5)
    if params is None:
        trials = _perturbed(k_noise, t.init(k_init, x_example), param_scales, fan_in_relative)
    else:
        trials = [("given params", params)]
    shape = (num_events, *x_example.shape)
    normal = lambda k, s, d: jax.random.normal(k, s, d)  # noqa: E731
    xs = (sample_x or normal)(k_x, shape, dtype)
    zs0 = (sample_z or normal)(k_z, shape, dtype)
    ctx = jax.random.normal(k_c, (num_events, context_dim), dtype) if context_dim else None
    run = _compiled_checks(t, context_dim, compiler_options)
    for where, p in trials:
        results = run(p, xs, zs0, ctx)
        _check_results(where, results, xs, zs0, atol, rtol)
    # jit against eager calls once, at the last (largest) params: tracing, not params, differs
    c0, loop = (ctx[0] if context_dim else None), results[0]
    _close(f"{where}: jit(apply) == apply", (loop["z"][0], loop["ld"][0]),
           t.apply(p, xs[0], context=c0), atol, rtol)  # fmt: skip
    _close(f"{where}: jit(inverse) == inverse", (loop["x0"][0], loop["ld0"][0]),
           t.inverse(p, zs0[0], context=c0), atol, rtol)  # fmt: skip


def _compiled_checks(t: Transform, context_dim: int, compiler_options: dict | None) -> Callable:
    """One jitted program: per-event round trips and Jacobian log-dets by a loop over events,
    the same by vmap, and gradients wrt the trainable params."""

    def apply(p, x, c):
        return t.apply(p, x, context=c)

    def inverse(p, z, c):
        return t.inverse(p, z, context=c)

    c_axis = 0 if context_dim else None

    def per_event(p, x, z0, c):
        z, ld = apply(p, x, c)
        x_back, ld_back = inverse(p, z, c)
        x0, ld0 = inverse(p, z0, c)
        z_back, _ = apply(p, x0, c)
        jac_ld = _flat_logdet(lambda v: apply(p, v, c)[0], x)
        jac_ld0 = _flat_logdet(lambda v: inverse(p, v, c)[0], z0)
        return dict(z=z, ld=ld, x_back=x_back, ld_back=ld_back, x0=x0, ld0=ld0, z_back=z_back,
                    jac_ld=jac_ld, jac_ld0=jac_ld0)  # fmt: skip

    def objective(tr, fixed, fn, events, ctx):
        out, ld = jax.vmap(fn, (None, 0, c_axis))(combine(tr, fixed), events, ctx)
        return jnp.sum(ld) + jnp.sum(jnp.sin(out))

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def run(p, xs, zs0, ctx):
        # A loop over events (lax.map runs them one at a time) against vmap, plus grads.
        if context_dim:
            loop = jax.lax.map(lambda a: per_event(p, *a), (xs, zs0, ctx))
        else:
            loop = jax.lax.map(lambda a: per_event(p, a[0], a[1], None), (xs, zs0))
        vm_apply = jax.vmap(apply, (None, 0, c_axis))(p, xs, ctx)
        vm_inverse = jax.vmap(inverse, (None, 0, c_axis))(p, zs0, ctx)
        tr, fixed = partition(p)
        grads = {
            name: jax.grad(objective)(tr, fixed, fn, ev, ctx)
            for name, fn, ev in (("apply", apply, xs), ("inverse", inverse, zs0))
        }
        return loop, vm_apply, vm_inverse, grads

    return run


def _check_results(where, results, xs, zs0, atol, rtol) -> None:
    loop, vm_apply, vm_inverse, grads = results
    dtype = xs.dtype
    chex.assert_shape(loop["ld"], (xs.shape[0],))
    chex.assert_type([loop["z"], loop["ld"], loop["x0"], loop["ld0"]], dtype)
    checks = [
        ("inverse(apply(x)) == x", loop["x_back"], xs),
        ("inverse log-det == -apply log-det", loop["ld_back"], -loop["ld"]),
        ("apply log-det == slogdet(jacfwd(apply))", loop["ld"], loop["jac_ld"]),
        ("apply(inverse(z)) == z", loop["z_back"], zs0),
        ("inverse log-det == slogdet(jacfwd(inverse))", loop["ld0"], loop["jac_ld0"]),
        ("vmap(apply) == loop of apply", vm_apply, (loop["z"], loop["ld"])),
        ("vmap(inverse) == loop of inverse", vm_inverse, (loop["x0"], loop["ld0"])),
    ]
    for what, got, want in checks:
        _close(f"{where}: {what}", got, want, atol, rtol)
    for name, g in grads.items():
        bad = [leaf for leaf in jax.tree.leaves(g) if not bool(jnp.all(jnp.isfinite(leaf)))]
        if bad:
            raise AssertionError(
                f"{where}: grad of {name} wrt params is not finite in {len(bad)} leaves"
            )


def check_flow(
    flow: Flow,
    *,
    key: jax.Array,
    dtype=jnp.float32,
    atol: float | None = None,
    rtol: float | None = None,
    context_dim: int = 0,
    num_events: int = 3,
    param_scales: Sequence[float] = PARAM_SCALES,
    fan_in_relative: bool = True,
    sample_x: Callable | None = None,
    compiler_options: dict | None = None,
) -> None:
    """`check_transform` on a whole model's transform, and its flow-level functions at the same
    params: ``sample_and_log_prob`` equals ``sample`` and ``log_prob`` of the samples it drew
    (the density direction evaluated at the generative direction's output: for an IAF, the
    d-pass solve fed with the one-pass samples), and ``log_prob`` equals the base's log-prob of
    f(x) plus the log-det. Kernels are perturbed relative to their fan-in by default
    (`randomize_params`), so wide conditioners get weights of trained size, not of 100x that.
    """
    x_example = jnp.zeros(flow.event_shape, dtype)
    atol, rtol = _tolerances(dtype, atol, rtol)
    k_check, k_init, k_noise, k_sample, k_x, k_c = jax.random.split(as_key(key), 6)
    check_transform(flow.transform, x_example, key=k_check, atol=atol, rtol=rtol,
                    context_dim=context_dim, num_events=num_events, param_scales=param_scales,
                    fan_in_relative=fan_in_relative, sample_x=sample_x,
                    compiler_options=compiler_options)  # fmt: skip
    init = flow.init(k_init, x_example)
    shape = (num_events, *flow.event_shape)
    xs = (sample_x or (lambda k, s, d: jax.random.normal(k, s, d)))(k_x, shape, dtype)
    ctx = jax.random.normal(k_c, (num_events, context_dim), dtype) if context_dim else None

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def run(p):
        samples, log_q = flow.sample_and_log_prob(p, k_sample, num_events, ctx)
        alone = flow.sample(p, k_sample, num_events, ctx)
        z, ld = jax.vmap(lambda x, c: flow.transform.apply(p, x, context=c),
                         (0, 0 if context_dim else None))(xs, ctx)  # fmt: skip
        by_parts = base_distribution(flow, p).log_prob(z) + ld
        return (
            samples,
            alone,
            log_q,
            flow.log_prob(p, samples, ctx),
            flow.log_prob(p, xs, ctx),
            by_parts,
        )

    for where, p in _perturbed(k_noise, init, param_scales, fan_in_relative):
        samples, alone, log_q, log_p_samples, log_p, by_parts = run(p)
        _close(f"{where}: sample == samples of sample_and_log_prob", alone, samples, atol, rtol)
        _close(f"{where}: sample_and_log_prob log q == log_prob(samples)", log_q, log_p_samples,
               atol, rtol)  # fmt: skip
        _close(f"{where}: log_prob == base log_prob(f(x)) + log-det", log_p, by_parts, atol, rtol)
