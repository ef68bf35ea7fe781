"""Linear flows z = W x on the last axis, with W parametrised so that det and solve are cheap.

All act on the last axis of an event; leading axes (pixels, for ``conv1x1``) share W, so the
log-det is (number of positions) * log|det W|. Each starts at W = I (QR: W = Q orthogonal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from flowjax_lab.core import Transform, as_key, check_event


def _rows(x):
    return x.reshape(-1, x.shape[-1])


def matrix_transform(
    name: str,
    init_params: Callable,
    forward: Callable,
    solve: Callable,
    log_abs_det: Callable,
    event_rank: int,
) -> Transform:
    """A Transform from a matrix parametrisation acting on rows of shape (n, C).

    ``forward(params, rows) = rows @ W^T``, ``solve(params, rows) = rows @ W^-T``,
    ``log_abs_det(params) = log|det W|``; ``init_params(key, C, dtype)``.
    """

    def check(params, x, where):
        if x.ndim != event_rank:
            raise ValueError(
                f"{name}.{where}: expected an event of rank {event_rank}, got shape {x.shape}"
            )
        check_event(x, x.shape, f"{name}.{where}")
        expected = jax.eval_shape(lambda: init_params(jax.random.key(0), x.shape[-1], x.dtype))
        got = jax.tree.map(lambda a: tuple(jnp.shape(a)), params)
        want = jax.tree.map(lambda a: tuple(a.shape), expected)
        if got != want:
            raise ValueError(f"{name}.{where}: params have shapes {got}, expected {want}")

    def init(key, x_example):
        if x_example.ndim != event_rank:
            raise ValueError(
                f"{name}: expected an event of rank {event_rank}, got shape {x_example.shape}"
            )
        return init_params(as_key(key), x_example.shape[-1], x_example.dtype)

    def apply(params, x, *, context=None):
        check(params, x, "apply")
        z = forward(params, _rows(x)).reshape(x.shape)
        return z, (x.size // x.shape[-1]) * log_abs_det(params)

    def inverse(params, z, *, context=None):
        check(params, z, "inverse")
        x = solve(params, _rows(z)).reshape(z.shape)
        return x, -(z.size // z.shape[-1]) * log_abs_det(params)

    return Transform(init, apply, inverse)


# --------------------------------------------------------------------------- full matrix


def _full_init(key, d, dtype):
    return {"weight": jnp.eye(d, dtype=dtype)}


def _full_forward(params, rows):
    return rows @ params["weight"].T


def _full_solve(params, rows):
    return jnp.linalg.solve(params["weight"], rows.T).T


def _full_logdet(params):
    return jnp.linalg.slogdet(params["weight"])[1]


def linear() -> Transform:
    """A full invertible matrix W (d x d, starts at I).

    f(x) = W x; g(z) = W^-1 z (LU solve); log|det J_f| = log|det W| (slogdet).
    Cost: O(d^2) apply plus O(d^3) for the log-det; O(d^3) inverse. Invertibility is not
    enforced: W can become singular during training (prefer ``lu_linear``).
    """
    return matrix_transform("linear", _full_init, _full_forward, _full_solve, _full_logdet, 1)


# --------------------------------------------------------------------------- triangular


def triangular(lower: bool = True) -> Transform:
    """A triangular matrix T with positive diagonal exp(log_diag) (starts at I).

    f(x) = T x; g(z) = T^-1 z by a triangular solve; log|det J_f| = sum(log_diag).
    Cost: O(d^2) both ways, O(d) log-det.
    """
    tri = jnp.tril if lower else jnp.triu
    k = -1 if lower else 1

    def init(key, d, dtype):
        return {"off_diagonal": jnp.zeros((d, d), dtype), "log_diag": jnp.zeros((d,), dtype)}

    def matrix(p):
        return tri(p["off_diagonal"], k) + jnp.diag(jnp.exp(p["log_diag"]))

    def forward(p, rows):
        return rows @ matrix(p).T

    def solve(p, rows):
        return jsl.solve_triangular(matrix(p), rows.T, lower=lower).T

    name = "triangular"
    return matrix_transform(name, init, forward, solve, lambda p: jnp.sum(p["log_diag"]), 1)


# --------------------------------------------------------------------------- LU


def _lu_init(key, d, dtype):
    zeros = jnp.zeros((d, d), dtype)
    return {"lower": zeros, "upper": zeros, "log_diag": jnp.zeros((d,), dtype)}


def _lu_factors(p):
    d = p["log_diag"].shape[0]
    lower = jnp.tril(p["lower"], -1) + jnp.eye(d, dtype=p["lower"].dtype)
    upper = jnp.triu(p["upper"], 1) + jnp.diag(jnp.exp(p["log_diag"]))
    return lower, upper


def _lu_parts(permutation):
    perm = None if permutation is None else np.asarray(permutation)
    inv = None if perm is None else np.argsort(perm)

    def forward(p, rows):
        lower, upper = _lu_factors(p)
        y = rows @ upper.T @ lower.T
        return y if perm is None else y[:, perm]

    def solve(p, rows):
        lower, upper = _lu_factors(p)
        y = rows.T if inv is None else rows[:, inv].T
        y = jsl.solve_triangular(lower, y, lower=True, unit_diagonal=True)
        return jsl.solve_triangular(upper, y, lower=False).T

    return forward, solve


def lu_linear(permutation: Sequence[int] | None = None) -> Transform:
    """W = P L U as in Glow: fixed P, unit-lower L, upper U with diagonal exp(log_diag).

    f(x) = P L U x; g(z) = U^-1 L^-1 P^T z by two triangular solves;
    log|det J_f| = sum(log_diag). Cost: O(d^2) both ways, O(d) log-det. Starts at W = P
    (P = I unless ``permutation`` gives the row order: (P y)_i = y_{permutation[i]}).
    """
    forward, solve = _lu_parts(permutation)
    logdet = lambda p: jnp.sum(p["log_diag"])  # noqa: E731
    return matrix_transform("lu_linear", _lu_init, forward, solve, logdet, 1)


# --------------------------------------------------------------------------- QR


def _householder(rows, vectors, reverse):
    """Apply H_1 ... H_K (reverse=True: to rows^T from the right) with H = I - 2 u u^T."""

    def body(y, v):
        u = v / jnp.linalg.norm(v)
        return y - 2.0 * jnp.outer(y @ u, u), None

    return jax.lax.scan(body, rows, vectors, reverse=reverse)[0]


def qr_linear(num_reflections: int | None = None) -> Transform:
    """W = Q R: Q a product of K Householder reflections, R upper with diagonal exp(log_diag).

    f(x) = Q R x; g(z) = R^-1 Q^T z (reflections, then a triangular solve);
    log|det J_f| = sum(log_diag) since |det Q| = 1. Cost: O(K d + d^2) both ways; K defaults to
    d (every orthogonal Q reachable). Starts with a random orthogonal Q (from the key) and R = I.
    """

    def init(key, d, dtype):
        k = d if num_reflections is None else num_reflections
        return {
            "reflections": jax.random.normal(key, (k, d), dtype),
            "upper": jnp.zeros((d, d), dtype),
            "log_diag": jnp.zeros((d,), dtype),
        }

    def r_matrix(p):
        return jnp.triu(p["upper"], 1) + jnp.diag(jnp.exp(p["log_diag"]))

    def forward(p, rows):  # rows @ (Q R)^T: R first, then H_K ... H_1
        return _householder(rows @ r_matrix(p).T, p["reflections"], reverse=True)

    def solve(p, rows):  # Q^T = H_K ... H_1 applied as H_1 first
        y = _householder(rows, p["reflections"], reverse=False)
        return jsl.solve_triangular(r_matrix(p), y.T, lower=False).T

    logdet = lambda p: jnp.sum(p["log_diag"])  # noqa: E731
    return matrix_transform("qr_linear", init, forward, solve, logdet, 1)
