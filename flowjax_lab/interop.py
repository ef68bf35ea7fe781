"""Bridges to distrax. distrax's "forward" is the generative direction, our ``inverse``."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp

from flowjax_lab.core import Transform
from flowjax_lab.flow import Flow, _split_batch, base_distribution


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
