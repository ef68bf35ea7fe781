"""Linear flows z = W x on the last axis, with W parametrised so that det and solve are cheap.

All act on the last axis of an event; leading axes (pixels, for ``conv1x1``) share W, so the
log-det is (number of positions) * log|det W|. ``linear``, ``triangular`` and ``lu_linear`` start
at W = I (``lu_linear(random_rotation=True)``: a random orthogonal W); ``qr_linear`` at a random
orthogonal Q with R = I.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from flowjax_lab.core import Transform, as_key, check_event

Array = jax.Array


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


def random_orthogonal(key, d: int, dtype=jnp.float32) -> Array:
    """A d x d orthogonal matrix drawn from the Haar measure: Q of the QR decomposition of a
    standard normal matrix, its columns signed by diag(R). det Q = +1 or -1; O(d^3)."""
    q, r = jnp.linalg.qr(jax.random.normal(as_key(key), (d, d), dtype))
    return q * jnp.sign(jnp.diag(r))


def _full_rotation_init(key, d, dtype):
    return {"weight": random_orthogonal(key, d, dtype)}


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


def _lu_rotation_init(key, d, dtype):
    """Glow's init: a random orthogonal W decomposed once, W = P L (U + diag(sign * exp(log_diag))),
    with the permutation P and the signs kept as integer (never trained) leaves."""
    p, lower, upper = jsl.lu(random_orthogonal(key, d, dtype))
    diag = jnp.diag(upper)
    return {
        "lower": lower,
        "upper": upper,
        "log_diag": jnp.log(jnp.abs(diag)),
        "sign": jnp.where(diag < 0, -1, 1).astype(jnp.int32),
        "perm": jnp.argmax(p, axis=1).astype(jnp.int32),  # (P y)_i = y_{perm[i]}
    }


def _lu_factors(p):
    d = p["log_diag"].shape[0]
    dtype = p["lower"].dtype
    lower = jnp.tril(p["lower"], -1) + jnp.eye(d, dtype=dtype)
    diag = jnp.exp(p["log_diag"])
    if "sign" in p:
        diag = diag * p["sign"].astype(dtype)
    return lower, jnp.triu(p["upper"], 1) + jnp.diag(diag)


def _lu_parts(permutation):
    """(forward, solve) of W = P L U; P from the params' "perm" leaf when there is one, else
    the static ``permutation`` (None: P = I)."""
    static = None if permutation is None else np.asarray(permutation)

    def perm_of(p):
        return p["perm"] if "perm" in p else static

    def forward(p, rows):
        lower, upper = _lu_factors(p)
        y = rows @ upper.T @ lower.T
        perm = perm_of(p)
        return y if perm is None else y[:, perm]

    def solve(p, rows):
        lower, upper = _lu_factors(p)
        perm = perm_of(p)
        y = rows.T if perm is None else rows[:, jnp.argsort(perm)].T
        y = jsl.solve_triangular(lower, y, lower=True, unit_diagonal=True)
        return jsl.solve_triangular(upper, y, lower=False).T

    return forward, solve


def lu_linear(
    permutation: Sequence[int] | None = None, *, random_rotation: bool = False
) -> Transform:
    """W = P L U as in Glow: fixed P, unit-lower L, upper U with diagonal s.

    f(x) = P L U x; g(z) = U^-1 L^-1 P^T z by two triangular solves;
    log|det J_f| = sum log|s|. Cost: O(d^2) both ways, O(d) log-det.

    Default: s = exp(log_diag), starting at W = P (P = I unless ``permutation`` gives the row
    order: (P y)_i = y_{permutation[i]}); only matrices whose leading minors are positive (after
    P) are reachable. ``random_rotation=True`` (Glow's init): W starts at a random orthogonal
    matrix drawn from the init key, decomposed once into P L U with s = sign * exp(log_diag);
    P ("perm") and the signs ("sign") are integer leaves that training never changes, so every
    invertible W with that P and those signs is reachable.
    """
    if random_rotation and permutation is not None:
        raise ValueError(
            "lu_linear: give permutation= or random_rotation=True, not both (the random "
            "rotation's LU decomposition chooses P)"
        )
    forward, solve = _lu_parts(permutation)
    init = _lu_rotation_init if random_rotation else _lu_init
    return matrix_transform("lu_linear", init, forward, solve, _lu_logdet, 1)


def _lu_logdet(p):
    return jnp.sum(p["log_diag"])


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
