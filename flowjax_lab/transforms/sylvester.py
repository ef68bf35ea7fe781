"""Householder and Sylvester flows for vector events (d,).

* `householder` (Tomczak and Welling 2016): K reflections H_k = I - 2 v_k v_k^T / |v_k|^2, an
  orthogonal map with log|det| = 0, exact in both directions, O(K d).
* `sylvester` (van den Berg et al. 2018): the generative map g(z) = z + A tanh(B z + b) with
  A = Q R, B = R~ Q^T, R and R~ upper triangular (M x M), Q (d x M) with orthonormal columns.
  Like `planar` (the M = 1 case), its closed form is the generative direction g (``inverse``,
  one pass); the density direction f = g^-1 (``apply``) solves an M-dimensional triangular
  system by M scalar root-finds (the library's `solve_monotone`), with implicit gradients.

Invertibility (van den Berg et al., theorem 2): g is invertible when every
r_ii r~_ii tanh'(.) > -1. Here the diagonal of R~ is reparametrised, as planar's u_hat, so that
r_ii r~_ii = max(m(r_ii c_ii), -1 + 1e-3) >= -1 + 1e-3 for every raw parameter value (c = the
raw R~), with m(a) = -1 + softplus(a + log(e - 1)) (m(0) = 0; the floor keeps the margin
exact in float32, where m rounds to -1 for a < -17). Then
det J_g = prod_i (1 + r_ii r~_ii (1 - t_i^2)) = prod_i (s_i + (1 - s_i) t_i^2) >= 1e-3^M,
s_i = 1 + r_ii r~_ii >= 1e-3, t = tanh(B z + b).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, as_key, check_event, check_vector_event
from flowjax_lab.transforms.numerical import SolverOptions, _options, _solve_monotone

KINDS = ("orthogonal", "householder", "triangular")
_SHIFT = math.log(math.e - 1.0)  # softplus(_SHIFT) = 1
_SLOPE = 1.0 - 1.0 / math.e  # m'(0)
_R_INIT = 0.01  # R ~ N(0, 0.01^2) at init: g is close to, not exactly, the identity
_MIN_SLOPE = 1e-3  # 1 + r_ii r~_ii >= 1e-3: each layer contracts a direction by <= 1000x


# --------------------------------------------------------------------------- householder


def _reflect(v, x):
    """H x = x - 2 v (v.x) / |v|^2 (the identity when v = 0)."""
    sq = v @ v
    return x - (2.0 * (v @ x) / jnp.where(sq > 0, sq, 1.0)) * v


def _reflect_all(vs, x, reverse=False):
    """H_K ... H_1 x (``reverse``: H_1 ... H_K x), one reflection per row of ``vs``."""
    body = lambda x_, v: (_reflect(v, x_), None)  # noqa: E731
    return jax.lax.scan(body, x, vs, reverse=reverse)[0]


def _check_shapes(name, where, params, x, shapes):
    check_event(x, getattr(x, "shape", ()), f"{name}.{where}")
    if getattr(x, "ndim", None) != 1:
        raise ValueError(f"{name}.{where}: expected an event of shape (d,), got {x.shape}")
    if not isinstance(params, dict) or set(params) != set(shapes):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{name}.{where}: expected params with keys {sorted(shapes)}, got {got}")
    for key, want in shapes.items():
        got = tuple(jnp.shape(params[key]))
        if got != want:
            raise ValueError(f"{name}.{where}: params['{key}'] has shape {got}, expected {want}")


def householder(num_reflections: int | None = None) -> Transform:
    """K Householder reflections: f(x) = H_K ... H_1 x, H_k = I - 2 v_k v_k^T / |v_k|^2.

    f (``apply``) and g = f^-1 = H_1 ... H_K z (``inverse``, the reflections in reverse order,
    each its own inverse) are exact; log|det J| = 0 both ways. O(K d) each way (no d x d
    matrix is formed). K defaults to d: d reflections reach every orthogonal matrix.

    Params: {"v": (K, d)}, drawn N(0, 1) from the key (a random orthogonal map). A zero row
    is taken as the identity (no reflection).

    Args:
        num_reflections: K >= 1 (default: d, the event size).

    Raises:
        ValueError: a non-positive ``num_reflections``; an event or params of the wrong shape.

    Example:
        >>> t = householder(3); p = t.init(jax.random.key(0), jnp.zeros(4))
        >>> z, logdet = t.apply(p, jnp.ones(4))  # logdet == 0
    """
    if num_reflections is not None:
        num_reflections = positive_int(num_reflections, "householder: num_reflections")

    def shape(x):
        d = x.shape[-1] if getattr(x, "ndim", 0) else 0
        return {"v": (d if num_reflections is None else num_reflections, d)}

    def init(key, x_example):
        check_vector_event(x_example, "householder.init")
        return {"v": jax.random.normal(as_key(key), shape(x_example)["v"], x_example.dtype)}

    def apply(params, x, *, context=None):
        del context
        _check_shapes("householder", "apply", params, x, shape(x))
        return _reflect_all(params["v"], x), jnp.zeros((), x.dtype)

    def inverse(params, z, *, context=None):
        del context
        _check_shapes("householder", "inverse", params, z, shape(z))
        return _reflect_all(params["v"], z, reverse=True), jnp.zeros((), z.dtype)

    return Transform(init, apply, inverse)


# --------------------------------------------------------------------------- the Q bases


def _orthonormal(raw):
    """Q of the QR decomposition of raw (d, M) with diag(R) >= 0: exactly orthonormal columns,
    a smooth function of raw where raw has full column rank. O(d M^2)."""
    q, r = jnp.linalg.qr(raw)
    return q * jnp.where(jnp.diagonal(r) >= 0, 1.0, -1.0).astype(q.dtype)


def _basis(kind, reverse, params, d, m):
    """(project, embed): z -> Q^T z (M,) and a -> Q a (d,) for the layer's Q."""
    if kind == "orthogonal":
        q = _orthonormal(params["q"])
        return (lambda z: q.T @ z), (lambda a: q @ a)
    if kind == "householder":  # Q = (H_K ... H_1)[:, :M]: O(K d) per product
        vs = params["v"]

        def project(z):
            return _reflect_all(vs, z, reverse=True)[:m]

        def embed(a):
            return _reflect_all(vs, jnp.zeros((d,), a.dtype).at[:m].set(a))

        return project, embed
    idx = np.arange(d)[::-1][:m] if reverse else np.arange(m)  # Q = columns of I (or reversed)
    return (lambda z: z[idx]), (lambda a: jnp.zeros((d,), a.dtype).at[idx].set(a))


# --------------------------------------------------------------------------- sylvester


def _product_map(a):
    """m(a) = -1 + softplus(a + log(e - 1)) = log1p((1 - 1/e) expm1(a)) (accurate near 0)."""
    small = jnp.log1p(_SLOPE * jnp.expm1(jnp.minimum(a, 1.0)))
    return jnp.where(a < 1.0, small, jax.nn.softplus(a + _SHIFT) - 1.0)


def _triangles(params):
    """(R, R~, s): the upper triangular R and R~ with R~'s diagonal reparametrised so that
    r_ii r~_ii = max(m(r_ii c_ii), -1 + 1e-3) (c = raw R~), and s = 1 + r_ii r~_ii =
    max(softplus(r_ii c_ii + log(e - 1)), 1e-3): r~_ii = c_ii phi(r_ii c_ii), phi(a) = m(a) / a
    (phi(0) = m'(0) = 1 - 1/e), so no division by r_ii."""
    r, c = params["r"], params["r_tilde"]
    upper = jnp.triu(jnp.ones_like(r), 1)
    r_diag, c_diag = jnp.diagonal(r), jnp.diagonal(c)
    a = r_diag * c_diag
    s = jax.nn.softplus(a + _SHIFT)
    floor = s <= _MIN_SLOPE
    s = jnp.where(floor, _MIN_SLOPE, s)
    product = jnp.where(floor, _MIN_SLOPE - 1.0, _product_map(a))
    nonzero = a != 0
    phi = jnp.where(nonzero, product / jnp.where(nonzero, a, 1.0), _SLOPE)
    return (r * upper + jnp.diag(r_diag)), (c * upper + jnp.diag(c_diag * phi)), s


def _log_det(s, t):
    """sum_i log(1 + r_ii r~_ii (1 - t_i^2)) = sum_i log(s_i + (1 - s_i) t_i^2), no cancellation."""
    return jnp.sum(jnp.log(s + (1.0 - s) * t * t))


def _solve_triangular_system(r, rt, b, y, opts):
    """The a (M,) with a + R tanh(R~ a + b) = y, and t = tanh(R~ a + b).

    R and R~ are upper triangular, so the system is triangular: a_M first, then a_{M-1}, ...
    Row i is the scalar equation a_i + r_ii tanh(r~_ii a_i + c_i) = y_i - sum_{j>i} r_ij t_j,
    c_i = b_i + sum_{j>i} r~_ij a_j, increasing in a_i (slope s_i + (1 - s_i) t_i^2 > 0):
    `solve_monotone` (bracket, bisection, safeguarded Newton; implicit gradients), M in sequence.
    """
    m = y.shape[0]

    def body(carry, i):
        a_vec, t_vec = carry  # zero at the rows not solved yet (<= i)
        c_i = rt[i] @ a_vec + b[i]
        rhs = y[i] - r[i] @ t_vec
        r_ii, rt_ii = r[i, i], rt[i, i]
        a_i = _solve_monotone(lambda v: v + r_ii * jnp.tanh(rt_ii * v + c_i), rhs, opts).x
        t_i = jnp.tanh(rt_ii * a_i + c_i)
        return (a_vec.at[i].set(a_i), t_vec.at[i].set(t_i)), None

    zeros = jnp.zeros((m,), y.dtype)
    (a_vec, t_vec), _ = jax.lax.scan(body, (zeros, zeros), jnp.arange(m), reverse=True)
    return a_vec, t_vec


def sylvester(
    kind: str = "orthogonal",
    num_vectors: int | None = None,
    *,
    num_reflections: int | None = None,
    reverse: bool = False,
    solver: SolverOptions | None = None,
) -> Transform:
    """Sylvester flow: g(z) = z + Q R tanh(R~ Q^T z + b), invertible for every parameter value.

    R, R~ (M x M) upper triangular, b (M,), Q (d x M) with orthonormal columns, by ``kind``:

    * ``"orthogonal"`` (O-SNF): Q from the QR decomposition of a free (d, M) matrix (signs
      fixed so diag of its R is >= 0): exactly orthonormal. O(d M^2) to form.
    * ``"householder"`` (H-SNF): Q = the first M columns of H_K ... H_1, K =
      ``num_reflections`` (default M) reflections (see `householder`). O(K d) per product.
    * ``"triangular"`` (T-SNF): Q = the first M columns of the identity, or of the reversal
      permutation when ``reverse`` (chain layers with alternating ``reverse``, or with
      `reverse_permutation`, so every coordinate is reached). No params for Q.

    The diagonal of R~ is reparametrised so that r_ii r~_ii >= -1 + 1e-3 (module docstring),
    which makes g invertible for every parameter value.

    g (``inverse``, the generative direction, one pass, O(d M + M^2) plus forming Q):
    log|det J_g(z)| = sum_i log|1 + r_ii r~_ii tanh'((R~ Q^T z + b)_i)| (Sylvester's
    determinant identity: det(I_d + Q R D R~ Q^T) = det(I_M + D R~ R), triangular).

    f (``apply``, no closed form): with y = Q^T x, the component of x outside span(Q) is kept
    and a = Q^T z solves the triangular system a + R tanh(R~ a + b) = y by M sequential scalar
    solves (`solve_monotone`; per row the first bracket [-1, 1] doubles until it holds the
    root, then ``bisection_steps`` = 24 halvings and ``newton_steps`` = 8 safeguarded Newton
    steps, tolerance 64 eps of the dtype: float32 and float64 round trips are exact to a few
    ulps of |x|), then z = x - Q R tanh(R~ a + b); log|det J_f| = -log|det J_g(z)|. Gradients
    in x and params by the implicit function theorem. Cost: M sequential solves of about
    35 scalar evaluations each, plus O(d M + M^2). ``solver`` (`SolverOptions`) overrides
    the iteration counts and tolerance.

    Params: {"r": (M, M), "r_tilde": (M, M), "b": (M,)} (the strict lower triangles are
    unused) plus {"q": (d, M)} (orthogonal) or {"v": (K, d)} (householder). Init: R ~ N(0,
    0.01^2), R~ ~ N(0, 1/M), b = 0 (so g is close to, but not, the identity), q ~ N(0, 1),
    v ~ N(0, 1). ``num_vectors`` M defaults to d.

    Args:
        kind: "orthogonal", "householder" or "triangular": how Q is made.
        num_vectors: M, 1 <= M <= d (default d).
        num_reflections: K for ``kind="householder"`` (default M).
        reverse: for ``kind="triangular"``: Q from the reversal permutation.
        solver: `SolverOptions` of the density direction's root-finds (default
            ``SolverOptions()``).

    Raises:
        ValueError: an unknown ``kind``, a non-positive ``num_vectors`` / ``num_reflections``,
            options that the kind does not use, or (at init) ``num_vectors`` > d.

    Example:
        >>> t = sylvester("householder", 2); p = t.init(jax.random.key(0), jnp.zeros(4))
        >>> x, logdet = t.inverse(p, jnp.ones(4))
        >>> z, minus_logdet = t.apply(p, x)  # z ~= ones(4)
    """
    if kind not in KINDS:
        raise ValueError(f"sylvester: kind must be one of {list(KINDS)}, got {kind!r}")
    if num_vectors is not None:
        num_vectors = positive_int(num_vectors, "sylvester: num_vectors")
    if num_reflections is not None:
        if kind != "householder":
            raise ValueError(
                f"sylvester: num_reflections={num_reflections!r} is only used by "
                f"kind='householder', got kind={kind!r}"
            )
        num_reflections = positive_int(num_reflections, "sylvester: num_reflections")
    if not isinstance(reverse, bool):
        raise ValueError(f"sylvester: reverse must be a bool, got {reverse!r}")
    if reverse and kind != "triangular":
        raise ValueError(f"sylvester: reverse=True is only used by kind='triangular', got {kind!r}")
    opts = _options(**(solver or SolverOptions())._asdict())

    def sizes(d, where):
        m = d if num_vectors is None else num_vectors
        if m > d:
            raise ValueError(
                f"{where}: num_vectors must be <= the event size d = {d}, got {num_vectors}"
            )
        return m, (m if num_reflections is None else num_reflections)

    def shapes(d, where):
        m, k = sizes(d, where)
        out = {"r": (m, m), "r_tilde": (m, m), "b": (m,)}
        if kind == "orthogonal":
            out["q"] = (d, m)
        elif kind == "householder":
            out["v"] = (k, d)
        return m, out

    def init(key, x_example):
        d = check_vector_event(x_example, "sylvester.init")
        m, want = shapes(d, "sylvester.init")
        dtype = x_example.dtype
        k_r, k_rt, k_q = jax.random.split(as_key(key), 3)
        params = {
            "r": _R_INIT * jax.random.normal(k_r, (m, m), dtype),
            "r_tilde": jax.random.normal(k_rt, (m, m), dtype) / math.sqrt(m),
            "b": jnp.zeros((m,), dtype),
        }
        for name in set(want) - set(params):
            params[name] = jax.random.normal(k_q, want[name], dtype)
        return params

    def parts(params, x, where):
        if getattr(x, "ndim", None) != 1:
            got = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"sylvester.{where}: expected an event of shape (d,), got {got}")
        d = x.shape[0]
        m, want = shapes(d, f"sylvester.{where}")
        _check_shapes("sylvester", where, params, x, want)
        project, embed = _basis(kind, reverse, params, d, m)
        return (*_triangles(params), project, embed)

    def inverse(params, z, *, context=None):
        del context
        r, rt, s, project, embed = parts(params, z, "inverse")
        t = jnp.tanh(rt @ project(z) + params["b"])
        return z + embed(r @ t), _log_det(s, t)

    def apply(params, x, *, context=None):
        del context
        r, rt, s, project, embed = parts(params, x, "apply")
        _, t = _solve_triangular_system(r, rt, params["b"], project(x), opts)
        return x - embed(r @ t), -_log_det(s, t)

    return Transform(init, apply, inverse)


__all__ = ["KINDS", "householder", "sylvester"]
