"""Continuous normalizing flows (Chen et al. 2018; FFJORD, Grathwohl et al. 2019) on diffrax.

The map is the time-1 flow of an ODE ``dz/dt = v(z, t; theta)`` with a flax.linen vector field:

* f (``apply``, data -> noise): z(0) = x, integrate t from 0 to 1, f(x) = z(1);
  log|det df/dx| = int_0^1 tr(dv/dz)(z(t), t) dt.
* g (``inverse``, noise -> data): z(1) = z, integrate t from 1 back to 0, g(z) = z(0);
  log|det dg/dz| = int_1^0 tr(dv/dz) dt = -int_0^1 tr(dv/dz) dt.

Both directions solve ONE augmented ODE d(z, l)/dt = (v, tr(dv/dz)) with l(t_start) = 0 (the
instantaneous change of variables: d log p(z(t))/dt = -tr(dv/dz)), so inverse(apply(x)) =
(x, -logdet) up to the solver's tolerance. The trace is exact (``trace="exact"``: d jvps of v per
evaluation, vmapped) or Hutchinson's estimate e^T (dv/dz) e with one probe e per solve (one vjp
per evaluation; unbiased; ``key=`` is then a required keyword of apply and inverse).

diffrax (``pip install "flowjax_lab[cnf]"``) is imported inside `cnf` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, as_key, check_vector_event
from flowjax_lab.nets import MLP

Array = jax.Array

ACTIVATIONS = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "silu": jax.nn.silu}
ADJOINTS = ("recursive_checkpoint", "backsolve", "direct", "forward")
TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
ON_FAILURE = ("raise", "nan")


class TimeMLP(nn.Module):
    """The default vector field v(z, t, c) = MLP([z; t; c]), output of z's shape, zero at init.

    Attributes:
        hidden: hidden widths.
        activation: a smooth nonlinearity (the ODE solver needs v to be smooth: ReLU nets make
            adaptive solvers take many steps).
    """

    hidden: Sequence[int]
    activation: Callable[[Array], Array] = jnp.tanh

    @nn.compact
    def __call__(self, z: Array, t: Array, context: Array | None = None) -> Array:
        zt = jnp.concatenate([z, jnp.reshape(t, (1,)).astype(z.dtype)])
        return MLP(tuple(self.hidden), z.shape[-1], self.activation, name="mlp")(zt, context)


class CNFSolution(NamedTuple):
    """What `cnf_solve` returns for one event.

    Attributes:
        y: the solved end point (f(x) for "apply", g(z) for "inverse").
        logdet: log|det| of that direction's Jacobian (estimated with Hutchinson).
        kinetic: int ||v(z(t), t)||^2 dt over the path (RNODE's kinetic energy).
        frobenius: int ||dv/dz||_F^2 dt (exact, or Hutchinson's ||e^T dv/dz||^2).
        num_steps: solver steps taken, accepted and rejected (a Tsit5/Dopri5 step costs about
            6 evaluations of the augmented field, each 1 + d jvps (exact) or 1 vjp (Hutchinson)).
        num_accepted_steps: the accepted ones.
        num_evaluations: evaluations of the augmented field (NFE): for an explicit Runge-Kutta
            solver of s stages, s per step, or 1 + (s - 1) per step when first-same-as-last
            (Tsit5, Dopri5: 1 + 6 num_steps); Euler 1 per step; NaN for other solvers.
    """

    y: Array
    logdet: Array
    kinetic: Array
    frobenius: Array
    num_steps: Array
    num_accepted_steps: Array
    num_evaluations: Array


def _evaluation_counts(diffrax, solver) -> tuple[float, float]:
    """(first, per_step): ``solver`` costs first + per_step * num_steps field evaluations (see
    `CNFSolution`); NaN for a solver whose cost is not known from its tableau."""
    tableau = getattr(solver, "tableau", None)
    if tableau is not None and hasattr(tableau, "c"):
        stages = len(tableau.c) + 1
        return (1.0, stages - 1.0) if tableau.fsal else (0.0, float(stages))
    if isinstance(solver, diffrax.Euler):
        return 0.0, 1.0
    return math.nan, math.nan


def _diffrax():
    try:
        import diffrax
        import equinox
    except ImportError as err:
        raise ImportError(
            'fl.transforms.cnf needs diffrax: pip install "flowjax_lab[cnf]"'
        ) from err
    return diffrax, equinox


def _choice(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"cnf: {what} must be one of {list(allowed)}, got {value!r}")
    return value


def _adjoint(diffrax, adjoint):
    if not isinstance(adjoint, str):
        return adjoint  # a diffrax adjoint instance
    return {
        "recursive_checkpoint": diffrax.RecursiveCheckpointAdjoint,
        "backsolve": diffrax.BacksolveAdjoint,
        "direct": diffrax.DirectAdjoint,
        "forward": diffrax.ForwardMode,
    }[_choice(adjoint, ADJOINTS, "adjoint")]()


def cnf(
    hidden: Sequence[int] = (64, 64),
    *,
    activation: str | Callable = "tanh",
    context_dim: int = 0,
    vector_field: nn.Module | None = None,
    trace: str = "exact",
    probe: str = "rademacher",
    solver: Any = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    adjoint: str | Any = "recursive_checkpoint",
    max_steps: int = 4096,
    on_failure: str = "raise",
) -> Transform:
    """A continuous normalizing flow on vector events (d,): f is the time-1 map of dz/dt = v.

    f (``apply``): integrate (z, l) from t = 0 to 1 with z(0) = x, l(0) = 0 and
    dl/dt = tr(dv/dz); returns (z(1), l(1)) = (f(x), log|det df/dx|). g (``inverse``):
    the same augmented ODE from t = 1 to 0, returning (g(z), log|det dg/dz|). Cost per direction:
    one adaptive ODE solve, each field evaluation one pass of v plus d jvps (exact trace) or one
    vjp (Hutchinson); `cnf_solve` reports the number of steps.

    Args:
        hidden: widths of the default `TimeMLP` vector field v(z, t, c) = MLP([z; t; c]) (zero
            output layer: the identity at init).
        activation: "tanh", "softplus", "silu" or a smooth callable.
        context_dim: context features c of a conditional flow (0: unconditional).
        vector_field: a flax module called as ``module(z, t, context)`` returning dz/dt of z's
            shape, instead of the `TimeMLP` (checked at init by ``jax.eval_shape``).
        trace: "exact" or "hutchinson" (then apply and inverse need the keyword ``key=``: one
            ``probe`` vector, "rademacher" or "gaussian", per solve; the same key in both
            directions gives inverse(apply(x)) = (x, -logdet) for the estimate too). ``chain``,
            ``stack`` and flows pass no key: use the exact trace there.
        solver: a diffrax solver instance (default ``diffrax.Tsit5()``; one with an error
            estimate, unless ``steps`` is given).
        rtol: the PID step-size controller's relative tolerance (on z and l).
        atol: its absolute tolerance.
        steps: a number of constant steps instead of the controller (no error control).
        adjoint: "recursive_checkpoint" (reverse-mode; diffrax's default), "backsolve"
            (BacksolveAdjoint: O(1) memory, solves the adjoint ODE backwards), "direct"
            (DirectAdjoint: forward AND reverse mode, so ``jax.jacfwd`` of apply works, as
            ``fl.testing.check_transform`` needs), "forward" (ForwardMode: jvp only), or a
            diffrax adjoint instance.
        max_steps: solver step budget per solve. A solve that exhausts it (or fails otherwise)
            is an error, never a silently truncated integral: ``on_failure="raise"`` raises
            ``equinox.EquinoxRuntimeError`` (a RuntimeError, eagerly and under ``jit``/``vmap``;
            equinox's ``EQX_ON_ERROR`` environment variable changes that), whose message names
            ``max_steps``; ``on_failure="nan"`` returns NaN output and log-det instead (so
            ``fl.fit`` stops with TrainingDivergedError).

    Params: the vector field's flax variables.

    Example:
        >>> t = cnf(hidden=(8,)); p = t.init(jax.random.key(0), jnp.zeros(2))
        >>> z, logdet = t.apply(p, jnp.ones(2))
    """
    diffrax, eqx = _diffrax()
    if isinstance(activation, str):
        activation = ACTIVATIONS[_choice(activation, ACTIVATIONS, "activation")]
    _choice(trace, TRACES, "trace")
    _choice(probe, PROBES, "probe")
    _choice(on_failure, ON_FAILURE, "on_failure")
    context_dim = positive_int(context_dim, "cnf: context_dim", minimum=0)
    max_steps = positive_int(max_steps, "cnf: max_steps")
    if steps is not None:
        steps = positive_int(steps, "cnf: steps")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not float(tol) > 0:
            raise ValueError(f"cnf: {name} must be > 0, got {tol!r}")
    net = vector_field if vector_field is not None else TimeMLP(tuple(hidden), activation)
    solver = diffrax.Tsit5() if solver is None else solver
    first_evals, evals_per_step = _evaluation_counts(diffrax, solver)

    def evaluations(num_steps):
        return first_evals + evals_per_step * jnp.asarray(num_steps, jnp.float32)
    adjoint_ = _adjoint(diffrax, adjoint)
    if steps is None:
        controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
    else:
        controller, dt0 = diffrax.ConstantStepSize(), 1.0 / steps
    failure = (
        f"cnf: the ODE solve hit max_steps={max_steps} steps without reaching the end time "
        "(raise max_steps, loosen rtol/atol, or regularise the vector field)",
        "cnf: the ODE solve failed (non-finite values or a step size that went to zero)",
    )

    def check_context(context, where):
        if context_dim and (context is None or jnp.shape(context) != (context_dim,)):
            got = None if context is None else jnp.shape(context)
            raise ValueError(f"cnf.{where}: expected a context of shape ({context_dim},), got {got}")
        return context if context_dim else None

    def init(key, x_example):
        check_vector_event(x_example, "cnf.init")
        c = jnp.zeros((context_dim,), x_example.dtype) if context_dim else None
        t0 = jnp.zeros((), x_example.dtype)
        shape = jax.eval_shape(lambda k: net.init(k, x_example, t0, c), as_key(key))
        out = jax.eval_shape(lambda p: net.apply(p, x_example, t0, c), shape)
        if tuple(out.shape) != tuple(x_example.shape):
            raise ValueError(
                f"cnf: the vector field returned shape {tuple(out.shape)} for an event of shape "
                f"{tuple(x_example.shape)}; dz/dt must have the event's shape"
            )
        return net.init(as_key(key), x_example, t0, c)

    def field(regularise):
        def rhs(t, state, args):  # params ride in args: BacksolveAdjoint differentiates those
            params, c, probe_vec = args
            z = state[0]
            fz = lambda u: net.apply(params, u, t, c)  # noqa: E731
            if probe_vec is None:  # exact: d jvps, the columns of dv/dz
                v, lin = jax.linearize(fz, z)
                cols = jax.vmap(lin)(jnp.eye(z.shape[0], dtype=z.dtype))
                tr, fro = jnp.trace(cols), jnp.sum(cols * cols)
            else:  # Hutchinson: e^T (dv/dz) by one vjp
                v, vjp = jax.vjp(fz, z)
                ej = vjp(probe_vec)[0]
                tr, fro = ej @ probe_vec, ej @ ej
            if regularise:
                return v, tr, v @ v, fro
            return v, tr

        return rhs

    def solve(params, x, context, key, direction, regularise):
        check_vector_event(x, f"cnf.{direction}")
        c = check_context(context, direction)
        probe_vec = None
        if trace == "hutchinson":
            if key is None:
                raise ValueError(
                    f"cnf.{direction}: trace='hutchinson' needs a random key for its probe: "
                    f"call {direction}(params, x, key=key)"
                )
            k = as_key(key)
            if probe == "rademacher":
                probe_vec = jax.random.rademacher(k, x.shape, x.dtype)
            else:
                probe_vec = jax.random.normal(k, x.shape, x.dtype)
        zero = jnp.zeros((), x.dtype)
        y0 = (x, zero, zero, zero) if regularise else (x, zero)
        t0, t1 = (0.0, 1.0) if direction == "apply" else (1.0, 0.0)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field(regularise)),
            solver,
            jnp.asarray(t0, x.dtype),
            jnp.asarray(t1, x.dtype),
            None if dt0 is None else jnp.asarray(dt0 if t1 > t0 else -dt0, x.dtype),
            y0,
            (params, c, probe_vec),
            stepsize_controller=controller,
            adjoint=adjoint_,
            max_steps=max_steps,
            saveat=diffrax.SaveAt(t1=True),
            throw=False,
        )
        out = jax.tree.map(lambda a: a[-1], sol.ys)
        failed = sol.result != diffrax.RESULTS.successful
        if on_failure == "raise":
            index = jnp.where(sol.result == diffrax.RESULTS.max_steps_reached, 0, 1)
            out = eqx.branched_error_if(out, failed, index, failure)
        else:
            out = jax.tree.map(lambda a: jnp.where(failed, jnp.nan, a), out)
        return out, sol.stats

    def apply(params, x, *, context=None, key=None):
        """f: (f(x), log|det df/dx|). ``key``: required with trace='hutchinson' (its probe)."""
        z, ld = solve(params, x, context, key, "apply", False)[0]
        return z, ld

    def inverse(params, z, *, context=None, key=None):
        """g: (g(z), log|det dg/dz|). ``key``: required with trace='hutchinson' (its probe)."""
        x, ld = solve(params, z, context, key, "inverse", False)[0]
        return x, ld

    def full(params, x, *, context=None, key=None, direction="apply"):
        _choice(direction, ("apply", "inverse"), "direction")
        (y, ld, kin, fro), stats = solve(params, x, context, key, direction, True)
        n = stats["num_steps"]
        return CNFSolution(y, ld, kin, fro, n, stats["num_accepted_steps"], evaluations(n))

    def counted(params, x, context=None, key=None):
        """(f(x), log|det df/dx|, field evaluations): ``apply``'s solve, with its count."""
        (z, ld), stats = solve(params, x, context, key, "apply", False)
        return z, ld, evaluations(stats["num_steps"])

    apply._cnf_solve = full  # read by cnf_solve (as make_flow reads _carries_base_params)
    apply._cnf_counted = counted  # read by fl.fit's "mle" term: the NFE in the history
    return Transform(init, apply, inverse)


def cnf_solve(
    t: Transform, params, x: Array, *, context=None, key=None, direction: str = "apply"
) -> CNFSolution:
    """Solve a `cnf` transform's augmented ODE with the RNODE terms and the solver's counts.

    One event ``x``; ``direction`` "apply" (f, t: 0 -> 1) or "inverse" (g, t: 1 -> 0). Returns a
    `CNFSolution`: the end point, the log-det, the kinetic energy int ||v||^2 dt, the Jacobian's
    int ||dv/dz||_F^2 dt (Finlay et al. 2020) and the number of solver steps. The kinetic and
    Frobenius integrals ride in the same ODE (so its step sizes differ slightly from ``apply``'s).
    vmap it over a batch; under ``jit`` the counts are arrays. ``t`` must be made by `cnf`
    (for a model: ``flow.transform`` of ``fl.models.cnf``, on the flow's params, trainable base
    or not).
    """
    fn = getattr(t.apply, "_cnf_solve", None)
    if fn is None:
        raise ValueError(
            "cnf_solve: expected a transform made by fl.transforms.cnf (or the .transform of "
            "fl.models.cnf), got another transform"
        )
    return fn(params, x, context=context, key=key, direction=direction)


def rnode_loss(
    t: Transform, base_log_prob: Callable, *, kinetic: float = 0.01, frobenius: float = 0.01
) -> Callable:
    """RNODE's objective (Finlay et al. 2020) for a `cnf` transform on a batch of data:

    loss(params, x, key=None, context=None) = mean_i [ -log p_base(f(x_i)) - log|det J_f(x_i)|
    + kinetic * int ||v||^2 dt + frobenius * int ||dv/dz||_F^2 dt ],

    ``base_log_prob`` the base's log density of ONE noise event (e.g. ``flow.base.log_prob``).
    ``key`` (one per batch, split per row) is needed with trace="hutchinson". With ``fl.fit``,
    the objective ``{"mle": 1.0, "rnode": w}`` trains the same penalty (both integrals at weight
    w, exact trace); use this loss for separate weights or Hutchinson's estimator.
    """
    for name, w in (("kinetic", kinetic), ("frobenius", frobenius)):
        if not float(w) >= 0:
            raise ValueError(f"rnode_loss: {name} must be >= 0, got {w!r}")

    def loss(params, x, key=None, context=None):
        keys = None if key is None else jax.random.split(as_key(key), x.shape[0])

        def one(xi, ki, ci):
            s = cnf_solve(t, params, xi, context=ci, key=ki)
            nll = -(base_log_prob(s.y) + s.logdet)
            return nll + kinetic * s.kinetic + frobenius * s.frobenius

        axes = (0, None if keys is None else 0, None if context is None else 0)
        return jnp.mean(jax.vmap(one, axes)(x, keys, context))

    return loss
