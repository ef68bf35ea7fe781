"""Planar and radial flows (Rezende and Mohamed, 2015) for vector events (d,).

Their closed form is the generative map g (our ``inverse``): one O(d) pass with its log-det.
The density direction f = g^-1 (``apply``) is exact too: radial inverts in closed form (the
positive root of a quadratic), planar by a safeguarded Newton solve of ONE scalar equation,
differentiated implicitly (``jax.custom_jvp``), so jvp/vjp/jacfwd of ``apply`` are exact.
Both are invertible for ALL parameter values by construction.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax_lab.core import Transform, as_key, check_event, check_vector_event

_SHIFT = math.log(math.e - 1.0)  # softplus(_SHIFT) = 1
_NEWTON_ITERS = 60  # safeguarded Newton: bisection fallback, exact to float64 in the worst case


def _check(name, params, x, where, keys):
    if getattr(x, "ndim", None) != 1:
        got = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{name}.{where}: expected an event of shape (d,), got {got}")
    check_event(x, x.shape, f"{name}.{where}")
    d = x.shape[0]
    if not isinstance(params, dict) or set(params) != set(keys):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{name}.{where}: expected params with keys {sorted(keys)}, got {got}")
    for key, vector in keys.items():
        want = (d,) if vector else ()
        if tuple(jnp.shape(params[key])) != want:
            raise ValueError(
                f"{name}.{where}: params['{key}'] has shape {tuple(jnp.shape(params[key]))}, "
                f"expected {want}"
            )


def _positive(v):
    """softplus(v), floored at the smallest normal float so it stays > 0 where exp underflows."""
    return jnp.maximum(jax.nn.softplus(v), jnp.finfo(jnp.result_type(v)).tiny)


# --------------------------------------------------------------------------- planar


def _planar_parts(params):
    """(u_hat, s) with s = 1 + w.u_hat = softplus(w.u + log(e - 1)) > 0."""
    w, u = params["w"], params["u"]
    wu, sq = w @ u, w @ w
    s = _positive(wu + _SHIFT)
    safe_sq = jnp.where(sq > 0, sq, 1.0)  # w = 0: g is the shift u tanh(b), u_hat = u
    u_hat = u + ((s - 1.0) - wu) * w / safe_sq
    return u_hat, s


def _planar_det(s, t):
    """1 + u_hat.psi = 1 + (s - 1)(1 - t^2) = s + (1 - s) t^2, without cancellation."""
    return s + (1.0 - s) * t * t


@jax.custom_jvp
def _planar_root(s, b, y):
    """The a with a + (s - 1) tanh(a + b) = y (monotone in a since s > 0).

    Safeguarded Newton (as ``rtsafe``) on the bracket [y - |s - 1|, y + |s - 1|], which shrinks
    with every evaluation: a Newton step is taken when it lands strictly inside the bracket and is
    at most half the previous step, otherwise the bracket is bisected. ``_NEWTON_ITERS`` fixed
    iterations (bisection alone would reach float64 precision in that many).
    """
    c = s - 1.0
    lo, hi = y - jnp.abs(c), y + jnp.abs(c)
    a0 = jnp.clip(y - c * jnp.tanh(y + b), lo, hi)

    def body(_, state):
        a, lo, hi, prev = state
        t = jnp.tanh(a + b)
        h = a + c * t - y
        lo = jnp.where(h < 0, a, lo)
        hi = jnp.where(h > 0, a, hi)
        step = h / _planar_det(s, t)
        newton = a - step
        ok = (newton > lo) & (newton < hi) & (2.0 * jnp.abs(step) <= jnp.abs(prev))
        mid = 0.5 * (lo + hi)
        done = (h == 0) | (newton == a)  # converged to float precision
        a_new = jnp.where(done, a, jnp.where(ok, newton, mid))
        return a_new, lo, hi, jnp.where(ok, step, a - mid)

    return jax.lax.fori_loop(0, _NEWTON_ITERS, body, (a0, lo, hi, hi - lo))[0]


@_planar_root.defjvp
def _planar_root_jvp(primals, tangents):
    """Implicit function theorem: h(a; s, b, y) = 0 gives da = -(h_s ds + h_b db + h_y dy) / h_a."""
    s, b, y = primals
    ds, db, dy = tangents
    a = _planar_root(s, b, y)
    t = jnp.tanh(a + b)
    da = (dy - t * ds - (s - 1.0) * (1.0 - t * t) * db) / _planar_det(s, t)
    return a, da


def planar() -> Transform:
    """Planar flow: g(z) = z + u_hat tanh(w.z + b), invertible for every (w, u, b).

    u_hat = u + (m(w.u) - w.u) w / |w|^2 with m(a) = -1 + softplus(a + log(e - 1)) (the paper's
    m, shifted so that m(0) = 0 and u = 0 is the identity), hence w.u_hat = m(w.u) > -1.

    g (``inverse``): log|det J_g| = log|1 + u_hat.psi(z)|, psi = (1 - tanh^2(w.z + b)) w.
    One O(d) pass.
    f (``apply``): a = w.z solves the scalar equation a + (w.u_hat) tanh(a + b) = w.x
    (safeguarded Newton, 60 fixed O(1) iterations, implicit gradients), then
    z = x - u_hat tanh(a + b); log|det J_f| = -log|1 + u_hat.psi(z)|. O(d) plus the scalar solve.

    Params: {"w": (d,), "u": (d,), "b": ()}. Init: w ~ N(0, 1/d) from the key, u = 0, b = 0
    (the identity map).

    Example:
        >>> t = planar(); p = t.init(jax.random.key(0), jnp.zeros(2))
        >>> z, logdet = t.apply(p, jnp.ones(2))
    """
    keys = {"w": True, "u": True, "b": False}

    def init(key, x_example):
        check_vector_event(x_example, "planar.init")
        d, dtype = x_example.shape[0], x_example.dtype
        w = jax.random.normal(as_key(key), (d,), dtype) / math.sqrt(d)
        return {"w": w, "u": jnp.zeros((d,), dtype), "b": jnp.zeros((), dtype)}

    def apply(params, x, *, context=None):
        del context
        _check("planar", params, x, "apply", keys)
        u_hat, s = _planar_parts(params)
        a = _planar_root(s, params["b"], params["w"] @ x)
        t = jnp.tanh(a + params["b"])
        return x - u_hat * t, -jnp.log(_planar_det(s, t))

    def inverse(params, z, *, context=None):
        del context
        _check("planar", params, z, "inverse", keys)
        u_hat, s = _planar_parts(params)
        t = jnp.tanh(params["w"] @ z + params["b"])
        return z + u_hat * t, jnp.log(_planar_det(s, t))

    return Transform(init, apply, inverse)


# --------------------------------------------------------------------------- radial


def _radial_parts(params):
    """(alpha, beta, alpha + beta) with alpha = softplus(raw_alpha) > 0 and
    alpha + beta = softplus(raw_beta) > 0 (computed directly, without cancellation)."""
    alpha = _positive(params["raw_alpha"])
    alpha_beta = _positive(params["raw_beta"])
    return alpha, alpha_beta - alpha, alpha_beta


def _norm(v):
    """|v| with a finite gradient (zero) at v = 0."""
    sq = v @ v
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


def _radial_logdet(alpha, alpha_beta, r, d):
    """log|det J_g| = (d-1) log(1 + beta h) + log(1 + beta h + beta h' r), h = 1/(alpha + r).

    With 1 + beta h = (alpha + beta + r)/(alpha + r) and
    1 + beta h + beta h' r = (r (2 alpha + r) + alpha (alpha + beta)) / (alpha + r)^2.
    """
    log_ar = jnp.log(alpha + r)
    return (
        (d - 1) * (jnp.log(alpha_beta + r) - log_ar)
        + jnp.log(r * (2.0 * alpha + r) + alpha * alpha_beta)
        - 2.0 * log_ar
    )


def radial() -> Transform:
    """Radial flow: g(z) = z + beta h(alpha, r) (z - z0), h = 1/(alpha + r), r = |z - z0|.

    alpha = softplus(raw_alpha) > 0 and beta = -alpha + softplus(raw_beta) > -alpha, so g is
    invertible for every parameter value.

    g (``inverse``): log|det J_g| = (d-1) log(1 + beta h) + log(1 + beta h + beta h'(r) r).
    One O(d) pass.
    f (``apply``): with R = |x - z0|, r solves R = r (1 + beta / (alpha + r)), the positive root
    of r^2 + (alpha + beta - R) r - alpha R = 0 (closed form, no iteration); then
    z = z0 + (x - z0) (alpha + r) / (alpha + beta + r); log|det J_f| = -log|det J_g(z)|. O(d).

    Params: {"center": (d,) (z0), "raw_alpha": (), "raw_beta": ()}. Init: center ~ N(0, I) from
    the key, raw_alpha = raw_beta = 0 (beta = 0: the identity map).

    Example:
        >>> t = radial(); p = t.init(jax.random.key(0), jnp.zeros(3))
        >>> x, logdet = t.inverse(p, jnp.ones(3))
    """
    keys = {"center": True, "raw_alpha": False, "raw_beta": False}

    def init(key, x_example):
        check_vector_event(x_example, "radial.init")
        d, dtype = x_example.shape[0], x_example.dtype
        zero = jnp.zeros((), dtype)
        center = jax.random.normal(as_key(key), (d,), dtype)
        return {"center": center, "raw_alpha": zero, "raw_beta": zero}

    def apply(params, x, *, context=None):
        del context
        _check("radial", params, x, "apply", keys)
        alpha, _, alpha_beta = _radial_parts(params)
        v = x - params["center"]
        big_r = _norm(v)
        p = alpha_beta - big_r
        root = jnp.sqrt(p * p + 4.0 * alpha * big_r)
        # the stable form of the quadratic's positive root for either sign of p
        r = jnp.where(
            p < 0, 0.5 * (root - p), 2.0 * alpha * big_r / jnp.where(p < 0, 1.0, p + root)
        )
        z = params["center"] + v * ((alpha + r) / (alpha_beta + r))
        return z, -_radial_logdet(alpha, alpha_beta, r, x.shape[0])

    def inverse(params, z, *, context=None):
        del context
        _check("radial", params, z, "inverse", keys)
        alpha, beta, alpha_beta = _radial_parts(params)
        v = z - params["center"]
        r = _norm(v)
        x = z + (beta / (alpha + r)) * v
        return x, _radial_logdet(alpha, alpha_beta, r, z.shape[0])

    return Transform(init, apply, inverse)
