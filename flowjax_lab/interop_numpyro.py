"""Flows inside numpyro: a flow as a numpyro distribution, and a flow autoguide for SVI.

This module imports numpyro at its top; ``flowjax_lab`` never imports it (``fl.interop``
reaches it lazily), so numpyro is needed only by those who call these functions
(``pip install "flowjax_lab[numpyro]"``).

Direction: the distribution samples by g = f^-1 on base noise (``flow.sample``) and scores by
f (``flow.log_prob``). A value drawn inside a numpyro trace carries its log q from the sampling
pass (numpyro's ``intermediates``), so the ELBO of a guide costs one g pass per particle, no f
pass (what matters for an IAF guide, whose f takes d sequential passes).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

try:
    import numpyro
    import numpyro.distributions as npdist
    from numpyro.distributions import constraints
    from numpyro.infer.autoguide import AutoContinuous
    from numpyro.infer.initialization import init_to_median
except ImportError as err:  # pragma: no cover - exercised only without numpyro
    raise ImportError(
        'flowjax_lab\'s numpyro bridge needs numpyro: pip install "flowjax_lab[numpyro]"'
    ) from err

from flowjax_lab.checks import positive_int
from flowjax_lab.core import as_key, combine, partition
from flowjax_lab.flow import Flow, check_context_given


def _real_support(event_shape: tuple[int, ...]):
    if len(event_shape) == 1:
        return constraints.real_vector
    return constraints.independent(constraints.real, len(event_shape))


class FlowDistribution(npdist.Distribution):
    """A flow with fixed params as a numpyro distribution (batch shape (), one flow event).

    ``log_prob(x) = log p_base(f(x)) + log|det J_f(x)|`` over any leading batch of events;
    ``sample(key, sample_shape)`` draws ``prod(sample_shape)`` events by g. Reparameterised
    (``has_rsample``): gradients flow through samples to ``params``. Params and context are
    pytree data, the flow is static, so the distribution goes through ``jit`` and ``vmap``.
    """

    arg_constraints: dict = {}
    reparametrized_params: list = []
    pytree_data_fields = ("params", "context")
    pytree_aux_fields = ("flow", "_support")

    def __init__(self, flow: Flow, params, context=None, *, support=None, validate_args=None):
        self.flow, self.params = flow, params
        self.context = None if context is None else jnp.asarray(context)
        self._support = _real_support(flow.event_shape) if support is None else support
        super().__init__(
            batch_shape=(), event_shape=tuple(flow.event_shape), validate_args=validate_args
        )

    @property
    def support(self):
        return self._support

    def sample_with_intermediates(self, key, sample_shape=()):
        shape = tuple(sample_shape)
        n = math.prod(shape)
        x, log_q = self.flow.sample_and_log_prob(self.params, as_key(key), n, self.context)
        return x.reshape(shape + self.event_shape), [log_q.reshape(shape)]

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape)
        x = self.flow.sample(self.params, as_key(key), math.prod(shape), self.context)
        return x.reshape(shape + self.event_shape)

    def rsample(self, key, sample_shape=()):
        return self.sample(key, sample_shape)

    def log_prob(self, value, intermediates=None):
        if intermediates:  # log q from the sampling pass: the value is the one just drawn
            return intermediates[0]
        return self.flow.log_prob(self.params, jnp.asarray(value), self.context)


def to_numpyro(flow: Flow, params, context=None, *, support=None) -> FlowDistribution:
    """The flow with fixed ``params`` as a ``numpyro.distributions.Distribution``.

    Use it anywhere numpyro takes a distribution, e.g. ``numpyro.sample("x", to_numpyro(flow,
    params))`` in a model (a learned prior) or in a guide. Event shape ``flow.event_shape``,
    batch shape (). ``support`` defaults to the real vectors (a flow with a bounded last layer,
    e.g. ``T.to_interval``, may pass its constraint, ``constraints.interval(a, b)``).
    Cost: a sample is one g pass, a log_prob one f pass, per event.

    Args:
      flow: an ``fl.Flow``.
      params: its params.
      context: one context vector (c,) for a conditional flow (required then), else None.

    Raises:
      ValueError: a conditional flow without context, or a context that is not one vector.
    """
    if context is not None and jnp.ndim(context) != 1:
        raise ValueError(
            f"to_numpyro: context must be one vector (c,), got shape {jnp.shape(context)} "
            "(for one context per event, build one distribution per context)"
        )
    check_context_given(flow, params, context, "to_numpyro")
    return FlowDistribution(flow, params, context, support=support)


QUANTILE_SAMPLES = 8192  # posterior draws behind FlowGuide.quantiles / median
QUANTILE_KEY = 0x9A17  # their default key


class FlowGuide(AutoContinuous):
    """A numpyro autoguide whose posterior over the model's flattened latents is a flow.

    numpyro's ``AutoContinuous`` machinery runs the model once, ravels every continuous latent
    site into one vector u of ``latent_dim`` numbers in unconstrained space (a positive site
    enters as its log, and so on, by ``biject_to(site.support)``), and maps the guide's draw of
    u back to each site with the Jacobian term. Here u ~ the flow, so
    q(site values) = flow density of u times the unconstraining Jacobians. The flow's float
    params are one numpyro param site ``"{prefix}_flow"`` (trained by ``SVI``); its integer
    leaves (permutations) are fixed structure kept here. Local (subsampled) latents are not
    supported (an ``AutoContinuous`` limit); discrete latents are refused by numpyro.

    Build it with ``fl.interop.flow_guide``.
    """

    def __init__(self, model, flow: Flow, params=None, *, key=None, prefix="auto",
                 init_loc_fn=init_to_median):  # fmt: skip
        if len(flow.event_shape) != 1:
            raise ValueError(
                f"flow_guide: the flow must have vector events (latent_dim,), got event shape "
                f"{tuple(flow.event_shape)}"
            )
        self._flow, self._params0 = flow, params
        self._key = jax.random.key(0) if key is None else as_key(key)
        super().__init__(model, prefix=prefix, init_loc_fn=init_loc_fn)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        d = (self.latent_dim,)
        if tuple(self._flow.event_shape) != d:
            raise ValueError(
                f"flow_guide: the model has {self.latent_dim} unconstrained latent numbers, so "
                f"the flow needs event shape {d}, got {tuple(self._flow.event_shape)}"
            )
        params = self._params0
        if params is None:
            params = self._flow.init(self._key, jnp.zeros(d, jnp.result_type(self._init_latent)))
        check_context_given(self._flow, params, None, "flow_guide")
        self._trainable0, self._fixed = partition(params)

    def _get_posterior(self):
        trainable = numpyro.param(f"{self.prefix}_flow", self._trainable0)
        return FlowDistribution(self._flow, combine(trainable, self._fixed))

    def flow_params(self, svi_params: dict):
        """The flow's params (an ``fl`` params tree) from ``SVI``'s params dict."""
        return combine(svi_params[f"{self.prefix}_flow"], self._fixed)

    def get_posterior(self, params: dict) -> FlowDistribution:
        """The fitted flow over the unconstrained latent vector u, as a distribution."""
        return FlowDistribution(self._flow, self.flow_params(params))

    def quantiles(self, params: dict, quantiles, *, num_samples: int = QUANTILE_SAMPLES,
                  key=None) -> dict:  # fmt: skip
        """Each site's marginal quantiles, {site: (len(quantiles), *site_shape)}, as numpyro's
        guides return them. A flow has no closed-form marginals, so they are Monte Carlo: the
        empirical quantiles of ``num_samples`` constrained posterior draws on a fixed ``key``
        (default ``jax.random.key(QUANTILE_KEY)``: repeatable). Standard error about
        sqrt(p (1 - p) / n) / density at the quantile (0.013 sd at the median, n = 8192)."""
        key = jax.random.key(QUANTILE_KEY) if key is None else as_key(key)
        u = self.get_posterior(params).sample(key, (positive_int(num_samples, "num_samples"),))
        draws = self._unpack_and_constrain(u, params)
        q = jnp.asarray(quantiles)
        return {site: jnp.quantile(v, q, axis=0) for site, v in draws.items()}

    def median(self, params: dict, *, num_samples: int = QUANTILE_SAMPLES, key=None) -> dict:
        """Each site's marginal median, {site: site_shape}: `quantiles` at 0.5 (Monte Carlo)."""
        out = self.quantiles(params, jnp.asarray([0.5]), num_samples=num_samples, key=key)
        return {site: v[0] for site, v in out.items()}

    def get_transform(self, params):
        raise NotImplementedError(
            "FlowGuide has no numpyro Transform (numpyro's NeuTraReparam needs one): use "
            "fl.interop.neutra(flow, guide.flow_params(params), log_density) instead"
        )


def flow_guide(flow: Flow, model, params=None, *, key=None, prefix: str = "auto",
               init_loc_fn=init_to_median) -> FlowGuide:  # fmt: skip
    """A flow autoguide for ``numpyro.infer.SVI`` (see `FlowGuide`).

    Args:
      flow: a vector flow with event shape (latent_dim,), latent_dim the number of
        unconstrained numbers in the model's continuous latent sites (raveled in site order).
      model: the numpyro model.
      params: initial flow params, or None to ``flow.init(key, ...)`` at the first trace.
      key: the key for that init (default ``jax.random.key(0)``).
      prefix: the numpyro param site is ``f"{prefix}_flow"``.
      init_loc_fn: numpyro's init strategy for the prototype trace (sets only dtypes/shapes).
    """
    return FlowGuide(model, flow, params, key=key, prefix=prefix, init_loc_fn=init_loc_fn)
