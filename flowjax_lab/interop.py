"""Bridges to distrax, numpyro and MCMC samplers (blackjax, numpyro's NUTS).

distrax's "forward" is the generative direction, our ``inverse``. The numpyro bridge lives in
``flowjax_lab.interop_numpyro`` and is imported only when ``to_numpyro`` or ``flow_guide`` is
called; `neutra` needs only jax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp

from flowjax_lab.core import Transform
from flowjax_lab.flow import Flow, _split_batch, base_distribution, check_context_given


def _over_batch(fn, x, event_shape):
    """Run ``fn`` (one event -> (event, scalar)) over any leading batch shape."""
    flat, batch = _split_batch(x, event_shape, "to_distrax")
    y, ld = jax.vmap(fn)(flat)
    return y.reshape(x.shape), ld.reshape(batch)


class _TransformBijector(distrax.Bijector):
    """A distrax bijector whose forward is our ``inverse`` (g) with fixed params."""

    def __init__(self, transform: Transform, params, event_shape):
        super().__init__(event_ndims_in=len(event_shape))
        self._t, self._params, self._shape = transform, params, tuple(event_shape)

    def forward_and_log_det(self, x):
        return _over_batch(lambda e: self._t.inverse(self._params, e), x, self._shape)

    def inverse_and_log_det(self, y):
        return _over_batch(lambda e: self._t.apply(self._params, e), y, self._shape)


def to_distrax(flow: Flow, params) -> distrax.Distribution:
    """The flow with fixed params as a ``distrax.Transformed`` distribution.

    Its ``log_prob`` and ``sample`` agree with ``flow.log_prob`` and ``flow.sample``.
    """
    return distrax.Transformed(
        base_distribution(flow, params),
        _TransformBijector(flow.transform, params, flow.event_shape),
    )


def from_distrax(bijector, init_params=None) -> Transform:
    """A distrax bijector as a Transform: apply = bijector.inverse, inverse = bijector.forward.

    ``bijector`` is a fixed ``distrax.Bijector`` (params are ``{}``), or a function
    ``params -> distrax.Bijector`` with ``init_params`` its initial params, to train it.
    Element-wise log-dets (e.g. a ``ScalarAffine`` on a vector event) are summed to a scalar.
    """
    if isinstance(bijector, distrax.Bijector):
        make, params0 = (lambda p: bijector), {}
    elif callable(bijector):
        if init_params is None:
            raise ValueError("from_distrax(fn) needs init_params, the params fn is called with")
        make, params0 = bijector, init_params
    else:
        raise ValueError(
            f"from_distrax: expected a distrax.Bijector or a function, got {bijector!r}"
        )

    def init(key, x_example):
        del key
        return jax.tree.map(lambda a: jnp.asarray(a, x_example.dtype), params0)

    def apply(params, x, *, context=None):
        z, ld = make(params).inverse_and_log_det(x)
        return z, jnp.sum(ld)

    def inverse(params, z, *, context=None):
        x, ld = make(params).forward_and_log_det(z)
        return x, jnp.sum(ld)

    return Transform(init, apply, inverse)


# --------------------------------------------------------------------------- numpyro (lazy)


def _numpyro_bridge():
    # Raises ImportError naming the extra (pip install "flowjax_lab[numpyro]") without numpyro.
    from flowjax_lab import interop_numpyro

    return interop_numpyro


def to_numpyro(flow: Flow, params, context=None, *, support=None):
    """The flow with fixed params as a ``numpyro.distributions.Distribution``.

    See `flowjax_lab.interop_numpyro.to_numpyro` (imported on the first call: ``import
    flowjax_lab`` does not import numpyro). Raises ImportError naming the ``numpyro`` extra
    when numpyro is missing, ValueError for a conditional flow without ``context``.

    Example:
      >>> d = fl.interop.to_numpyro(flow, params)
      >>> numpyro.sample("theta", d)  # inside a numpyro model or guide
    """
    return _numpyro_bridge().to_numpyro(flow, params, context, support=support)


def flow_guide(flow: Flow, model, params=None, *, key=None, prefix: str = "auto",
               init_loc_fn=None):  # fmt: skip
    """A numpyro SVI autoguide whose posterior over the model's unconstrained latents is the
    flow; see `flowjax_lab.interop_numpyro.flow_guide` for the arguments (``init_loc_fn``
    None is numpyro's ``init_to_median``) and `flowjax_lab.interop_numpyro.FlowGuide`.

    Example:
      >>> guide = fl.interop.flow_guide(fl.models.iaf(2, 3, (32, 32)), model)
      >>> svi = numpyro.infer.SVI(model, guide, numpyro.optim.Adam(1e-3), Trace_ELBO())
    """
    bridge = _numpyro_bridge()
    kwargs = {} if init_loc_fn is None else {"init_loc_fn": init_loc_fn}
    return bridge.flow_guide(flow, model, params, key=key, prefix=prefix, **kwargs)


# --------------------------------------------------------------------------- NeuTra


class NeuTra(NamedTuple):
    """A target pulled back through a flow's generative map g, for MCMC in the base space.

    Attributes:
      log_density_in_base_space: ``u -> log pi(g(u)) + log|det dg/du|`` on ONE event u (the
        ``logdensity_fn`` of blackjax, or minus numpyro's ``potential_fn``).
      to_data: ``u -> x = g(u)`` on ONE event (``jax.vmap`` it over a chain's draws).
    """

    log_density_in_base_space: Callable
    to_data: Callable


def neutra(flow: Flow, params, target_log_prob, context=None) -> NeuTra:
    """NeuTra (Hoffman et al. 2019): run HMC/NUTS on u, where x = g(u), instead of on x.

    With x = g(u), the density of u is pi_u(u) = pi(g(u)) |det dg/du| (change of variables),
    so a chain on u with ``log_density_in_base_space`` maps by ``to_data`` to a chain on pi,
    exactly: the flow changes the geometry the sampler sees, not the target. If the flow
    matched pi, pi_u would be the flow's base, N(0, I) for the default base, which NUTS
    samples with no funnels and no correlations. Needs only jax: pass the functions to
    blackjax (``blackjax.nuts(neutra.log_density_in_base_space, ...)``) or to numpyro's
    ``NUTS(potential_fn=lambda u: -neutra.log_density_in_base_space(u))``.
    Cost: one g pass (with its log-det) per gradient evaluation, plus the target's.

    Args:
      flow: a fitted flow (e.g. by ``fl.fit(..., objective="reverse_kl")``).
      params: its params.
      target_log_prob: unnormalised log pi of ONE event, or an object with a ``log_prob``
        attribute (an ``fl.targets`` Target).
      context: one context vector (c,) for a conditional flow (required then).

    Raises:
      ValueError: a conditional flow without context, or a target that is not callable.
    """
    log_pi = getattr(target_log_prob, "log_prob", target_log_prob)
    if not callable(log_pi):
        raise ValueError(
            f"neutra: target_log_prob must be a function of one event or have a log_prob "
            f"attribute, got {target_log_prob!r}"
        )
    check_context_given(flow, params, context, "neutra")
    shape = tuple(flow.event_shape)

    def g(u):
        u = jnp.asarray(u)
        if tuple(u.shape) != shape:
            raise ValueError(
                f"neutra: expected one base-space event of shape {shape}, got shape "
                f"{tuple(u.shape)} (vmap over draws)"
            )
        return flow.transform.inverse(params, u, context=context)

    def log_density_in_base_space(u):
        x, logdet = g(u)
        return log_pi(x) + logdet

    def to_data(u):
        return g(u)[0]

    return NeuTra(log_density_in_base_space, to_data)
