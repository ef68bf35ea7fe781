"""Numerical inverses for elementwise monotone maps: bracketing, bisection, Newton, implicit grads.

Many transformers have a cheap increasing forward map and no closed-form inverse (sum-of-squares
polynomials, deep sigmoidal flows, ...). `solve_monotone` inverts any elementwise increasing
map ``fn`` at ``z``, every element at once and with fixed iteration counts (jit/vmap-able):

1. bracket: start from ``[lower, upper]`` and step outwards, doubling the width, until
   ``fn(lo) <= z <= fn(hi)`` (one evaluation of ``fn`` per step, at most ``expand_steps``);
2. ``bisection_steps`` halvings of the bracket;
3. ``newton_steps`` safeguarded Newton steps ``x <- x - (fn(x) - z) / fn'(x)`` (a step that
   leaves the bracket, or meets a non-positive or non-finite slope, bisects instead).

Gradients of the solution with respect to ``z`` and to every array ``fn`` closes over come from
the implicit function theorem through ``jax.lax.custom_root`` (dx = -(d fn) / fn'(x)): nothing
is differentiated through the iterations. Cost: ``expand + bisection + newton + 1`` evaluations
of ``fn`` (Newton's also carry one jvp), O(d) each for an elementwise map.

`numerical_inverse` wraps a `Transform` whose ``apply`` is elementwise and increasing;
`numerical_transformer` builds a `Transformer` (for ``maf``, ``iaf`` and couplings) from a
forward map alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, check_event
from flowjax_lab.transforms.spline import Transformer

Array = jax.Array


class RootResult(NamedTuple):
    """What `solve_monotone` found, elementwise: the root, |fn(x) - z| and a convergence flag."""

    x: Array
    residual: Array
    converged: Array


class SolverOptions(NamedTuple):
    """Iteration counts and tolerance of `solve_monotone` (see its docstring)."""

    lower: float = -1.0
    upper: float = 1.0
    bisection_steps: int = 24
    newton_steps: int = 8
    expand_steps: int = 64
    tol: float | None = None
    debug: bool = False


def _options(**kwargs) -> SolverOptions:
    opts = SolverOptions(**kwargs)
    lower, upper = float(opts.lower), float(opts.upper)
    if not (np.isfinite(lower) and np.isfinite(upper) and lower < upper):
        raise ValueError(
            f"numerical inverse: need finite lower < upper for the first bracket, got "
            f"lower={opts.lower!r}, upper={opts.upper!r}"
        )
    if opts.tol is not None and not float(opts.tol) > 0:
        raise ValueError(f"numerical inverse: tol must be > 0, got {opts.tol!r}")
    return opts._replace(
        lower=lower,
        upper=upper,
        bisection_steps=positive_int(opts.bisection_steps, "bisection_steps", minimum=0),
        newton_steps=positive_int(opts.newton_steps, "newton_steps", minimum=0),
        expand_steps=positive_int(opts.expand_steps, "expand_steps", minimum=0),
    )


def _raise_unconverged(all_converged, worst_residual, count) -> None:
    if not bool(all_converged):
        raise FloatingPointError(
            f"numerical inverse did not converge at {int(count)} element(s): largest residual "
            f"|f(x) - z| = {float(worst_residual):.3g} (raise the iteration counts, widen the "
            "first bracket, or check that the map is increasing and finite there)"
        )


def _solve(h, z, opts: SolverOptions, tol):
    """(x, (residual, converged)) for the increasing elementwise h(x) = fn(x) - z."""
    dtype = z.dtype
    lo = jnp.full(z.shape, opts.lower, dtype)
    hi = jnp.full(z.shape, opts.upper, dtype)
    h_lo, h_hi = h(lo), h(hi)

    # 1. bracket: move the end that is on the wrong side outwards, doubling the width
    def needs_expanding(s):
        i, lo, hi, h_lo, h_hi = s
        return (i < opts.expand_steps) & jnp.any((h_lo > 0) | (h_hi < 0))

    def expand(s):
        i, lo, hi, h_lo, h_hi = s
        step = 2.0 * (
            hi - lo
        )  # the new bracket [hi, hi + step] (or [lo - step, lo]) is twice as wide
        down, up = h_lo > 0, (h_hi < 0) & ~(h_lo > 0)
        x_new = jnp.where(down, lo - step, jnp.where(up, hi + step, lo))
        h_new = h(x_new)
        lo, hi, h_lo, h_hi = (
            jnp.where(down, x_new, jnp.where(up, hi, lo)),
            jnp.where(down, lo, jnp.where(up, x_new, hi)),
            jnp.where(down, h_new, jnp.where(up, h_hi, h_lo)),
            jnp.where(down, h_lo, jnp.where(up, h_new, h_hi)),
        )
        return i + 1, lo, hi, h_lo, h_hi

    _, lo, hi, h_lo, h_hi = jax.lax.while_loop(needs_expanding, expand, (0, lo, hi, h_lo, h_hi))
    bracketed = (h_lo <= 0) & (h_hi >= 0)

    # 2. bisection
    def bisect(_, s):
        lo, hi = s
        mid = 0.5 * (lo + hi)
        below = h(mid) < 0
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, opts.bisection_steps, bisect, (lo, hi))

    # 3. safeguarded Newton from the midpoint; the best point evaluated is returned
    ones = jnp.ones_like(z)

    def newton(_, s):
        x, lo, hi, best, best_r = s
        hx, slope = jax.jvp(h, (x,), (ones,))
        better = jnp.abs(hx) < best_r
        best, best_r = jnp.where(better, x, best), jnp.where(better, jnp.abs(hx), best_r)
        lo = jnp.where(hx < 0, x, lo)
        hi = jnp.where(hx > 0, x, hi)
        step = x - hx / jnp.where(slope > 0, slope, 1.0)
        ok = (slope > 0) & jnp.isfinite(step) & (step >= lo) & (step <= hi)
        x = jnp.where(hx == 0, x, jnp.where(ok, step, 0.5 * (lo + hi)))
        return x, lo, hi, best, best_r

    mid = 0.5 * (lo + hi)
    inf = jnp.full(z.shape, jnp.inf, dtype)
    x, lo, hi, best, best_r = jax.lax.fori_loop(
        0, opts.newton_steps, newton, (mid, lo, hi, mid, inf)
    )
    r = jnp.abs(h(x))
    better = (r < best_r) | ~jnp.isfinite(best_r)  # no Newton step (or none finite): keep x
    x, residual = jnp.where(better, x, best), jnp.where(better, r, best_r)
    eps = jnp.finfo(dtype).eps
    tight = (hi - lo) <= 16 * eps * (1 + jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
    small = residual <= tol * (1 + jnp.abs(z))
    converged = bracketed & (small | tight) & jnp.isfinite(residual)
    if opts.debug:
        jax.debug.callback(
            _raise_unconverged, jnp.all(converged),
            jnp.max(jnp.where(converged, 0, jnp.nan_to_num(residual, nan=jnp.inf))),
            jnp.sum(~converged),
        )  # fmt: skip
    return x, (residual, converged.astype(dtype))  # a float flag: custom_root's aux has tangents


def solve_monotone(fn: Callable[[Array], Array], z: Array, **options) -> RootResult:
    """The x with fn(x) = z, for an elementwise increasing ``fn`` (x, z of one shape).

    Options (`SolverOptions`): ``lower``, ``upper`` (the first bracket, widened as needed),
    ``bisection_steps`` (24), ``newton_steps`` (8), ``expand_steps`` (64 doublings at most),
    ``tol`` (residual |fn(x) - z| <= tol (1 + |z|) counts as converged; default 64 eps of the
    dtype) and ``debug`` (raise FloatingPointError, through ``jax.debug.callback``, when any
    element did not converge). Without ``debug`` an unconverged element returns the best point
    of its bracket with ``converged = False``, never NaN for finite z. An element also counts as
    converged when its bracket is a few ulps wide (a steep map cannot get a smaller residual).
    Under ``jit`` the debug error arrives wrapped in JAX's runtime error, with this message. The
    bracket is cast to z's dtype: a bound beyond its range (1e39 in float32) is inf, and its
    elements come back flagged, not solved.

    Differentiable in ``z`` and in the arrays ``fn`` closes over by the implicit function
    theorem (``jax.lax.custom_root``); ``fn`` must be elementwise (diagonal Jacobian) and
    increasing. Neither is checked (it would cost a Jacobian): a map that mixes elements gets
    wrong roots and wrong gradients; test yours with ``fl.testing.check_transform``.
    """
    return _solve_monotone(fn, z, _options(**options))


def _solve_monotone(fn, z, opts: SolverOptions) -> RootResult:
    """`solve_monotone` with checked options (the wrappers check theirs once, at construction)."""
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(f"solve_monotone: z must be floating-point, got dtype {z.dtype}")
    tol = opts.tol if opts.tol is not None else 64 * float(jnp.finfo(z.dtype).eps)
    x, (residual, converged) = jax.lax.custom_root(
        lambda x: fn(x) - z,
        jnp.zeros_like(z),
        lambda h, _: _solve(h, z, opts, tol),
        lambda g, y: y / g(jnp.ones_like(y)),
        has_aux=True,
    )
    return RootResult(x, jax.lax.stop_gradient(residual), jax.lax.stop_gradient(converged) > 0.5)


def numerical_inverse(t: Transform, **options) -> Transform:
    """``t`` with its inverse computed numerically: g(z) = the x with f(x) = z.

    ``t.apply`` must be elementwise (diagonal Jacobian) and increasing in each element, as the
    rational-quadratic spline, affine, sigmoid or a deep sigmoidal layer are; init and apply are
    ``t``'s. log|det J_g(z)| = -log|det J_f(g(z))|, exact at the solved point, with gradients in
    params and z by the implicit function theorem. Options: those of `solve_monotone`. Cost of
    the inverse: about ``expand + bisection + 2 newton + 2`` applications of ``t``.
    """
    opts = _options(**options)

    def inverse(params, z, *, context=None):
        check_event(z, z.shape, "numerical_inverse.inverse")
        fn = lambda x: t.apply(params, x, context=context)[0]  # noqa: E731
        x = _solve_monotone(fn, z, opts).x
        return x, -t.apply(params, x, context=context)[1]

    return Transform(t.init, t.apply, inverse)


def numerical_transformer(
    num_params: int, forward: Callable[[Array, Array], tuple[Array, Array]], **options
) -> Transformer:
    """A `Transformer` from its forward map alone: ``forward(x, raw) -> (y, log dy/dx)``,
    elementwise and increasing in x, ``raw`` of shape ``(*x.shape, num_params)``.

    The inverse solves forward(x, raw) = y by `solve_monotone` (options as there), with implicit
    gradients in y and raw. Use it for your own transformer in ``maf``, ``iaf`` and the couplings
    (pass the `Transformer` as ``transformer=``).
    """
    num_params = positive_int(num_params, "numerical_transformer: num_params")
    opts = _options(**options)

    def inverse(y, raw):
        x = _solve_monotone(lambda x: forward(x, raw)[0], y, opts).x
        return x, -forward(x, raw)[1]

    return Transformer(num_params, forward, inverse)
