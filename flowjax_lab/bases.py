"""Base distributions with params (`TrainableBase`): trained with the flow, part of its params.

``fl.make_flow(transform, fl.bases.student_t((d,)))`` gives params ``{"transform": ..., "base":
...}``; ``fit``, checkpoints, sharding, ``to_distrax`` and the checkers take them unchanged. The
distributions are distrax's (and TFP's Student-t through distrax), built from the params on each
call; sampling is reparametrised, so reverse KL trains the base too.

* `diagonal_normal`: N(loc, diag(scale^2)), scale = exp(log_scale).
* `student_t`: independent Student-t per dimension with learned degrees of freedom
  nu = exp(log_df) > 0 (any real raw value is a valid nu), loc and scale: tails as heavy as the
  data's (a Gaussian base's tails are lighter than any Student-t's, and a flow of Lipschitz
  layers cannot make them heavier).
* `gaussian_mixture`: sum_k pi_k N(mu_k, diag(sigma_k^2)) with learned weights, means and
  scales: a base with several modes. Reverse KL samples it per component (see its docstring).
"""

from __future__ import annotations

import math
import warnings

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.flow import TrainableBase


def _shape(event_shape) -> tuple[int, ...]:
    shape = tuple(int(positive_int(n, "event_shape entry")) for n in event_shape)
    if not shape:
        raise ValueError("a base needs a non-empty event_shape, e.g. (d,)")
    return shape


def diagonal_normal(event_shape) -> TrainableBase:
    """N(loc, diag(exp(log_scale))^2) over events of ``event_shape``; starts at N(0, I).

    Params ``{"loc", "log_scale"}``, each of ``event_shape``. log p and sampling O(d).
    """
    shape = _shape(event_shape)

    def init(key, dtype):
        del key
        return {"loc": jnp.zeros(shape, dtype), "log_scale": jnp.zeros(shape, dtype)}

    def distribution(params):
        normal = distrax.Normal(params["loc"], jnp.exp(params["log_scale"]))
        return distrax.Independent(normal, len(shape))

    return TrainableBase(shape, init, distribution)


def _tfp():
    from tensorflow_probability.substrates import jax as tfp  # distrax's own dependency

    return tfp


class _QuietStudentT(distrax.Distribution):
    """TFP's Student-t as a distrax distribution, without TFP's float64 warnings.

    TFP's gamma sampler asks for float64 constants; with x64 off JAX truncates them to float32
    (harmless) and warns at every trace. The warnings are silenced here, nothing else is.
    """

    def __init__(self, df, loc, scale, ndims: int):
        self._dist = distrax.as_distribution(
            _tfp().distributions.Independent(
                _tfp().distributions.StudentT(df=df, loc=loc, scale=scale),
                reinterpreted_batch_ndims=ndims,
            )
        )

    @property
    def event_shape(self):
        return self._dist.event_shape

    @property
    def batch_shape(self):
        return self._dist.batch_shape

    def _sample_n(self, key, n):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
            return self._dist.sample(seed=key, sample_shape=(n,))

    def log_prob(self, value):
        return self._dist.log_prob(value)

    def mode(self):
        return self._dist.mode()


def student_t(event_shape, df: float = 5.0, *, learn_df: bool = True) -> TrainableBase:
    """Independent Student-t per element with learned loc, scale and degrees of freedom.

    p(z) = prod_i t_{nu_i}((z_i - loc_i) / scale_i) / scale_i with nu = exp(log_df) (> 0 for
    every value of the param, so nu <= 0 cannot occur), scale = exp(log_scale). Starts at
    loc = 0, scale = 1, nu = ``df`` in every element. ``learn_df=False`` keeps nu fixed at
    ``df`` (a closure constant, not a param). Params ``{"loc", "log_scale"[, "log_df"]}``, each
    of ``event_shape``. log p O(d); sampling O(d) (TFP's reparametrised gamma: gradients reach
    nu, loc and scale).
    """
    shape = _shape(event_shape)
    df = float(df)
    if not (math.isfinite(df) and df > 0):
        raise ValueError(f"student_t: df must be a finite number > 0, got {df!r}")

    def init(key, dtype):
        del key
        params = {"loc": jnp.zeros(shape, dtype), "log_scale": jnp.zeros(shape, dtype)}
        if learn_df:
            params["log_df"] = jnp.full(shape, math.log(df), dtype)
        return params

    def distribution(params):
        nu = jnp.exp(params["log_df"]) if learn_df else jnp.full(shape, df, params["loc"].dtype)
        return _QuietStudentT(nu, params["loc"], jnp.exp(params["log_scale"]), len(shape))

    return TrainableBase(shape, init, distribution)


def gaussian_mixture(event_shape, num_components: int = 4, spread: float = 1.0) -> TrainableBase:
    """sum_k pi_k N(mu_k, diag(sigma_k^2)) over events of ``event_shape``, all learned.

    pi = softmax(logits), sigma_k = exp(log_scale_k). Starts with equal weights, unit scales and
    means mu_k ~ N(0, ``spread``^2 I) drawn from the init key (distinct means break the
    components' symmetry). Params ``{"logits": (K,), "loc": (K, *event_shape), "log_scale":
    (K, *event_shape)}``. log p O(K d) (log-sum-exp over components); sampling O(K + d).

    For reverse KL, ``weighted_sample`` draws sample j from component k = j mod K (n_k = n / K
    of each, reparametrised) with weight pi_k / n_k: sum_j w_j F(z_j) is an unbiased estimate of
    E[F(z)] whose gradient reaches pi exactly, where plain draws (a discrete choice of k) give
    pi no pathwise gradient. Needs n >= K.
    """
    shape = _shape(event_shape)
    k = int(positive_int(num_components, "gaussian_mixture: num_components"))
    spread = float(spread)
    if not (math.isfinite(spread) and spread >= 0):
        raise ValueError(f"gaussian_mixture: spread must be a finite number >= 0, got {spread!r}")
    ndims = len(shape)

    def init(key, dtype):
        return {
            "logits": jnp.zeros((k,), dtype),
            "loc": spread * jax.random.normal(key, (k, *shape), dtype),
            "log_scale": jnp.zeros((k, *shape), dtype),
        }

    def components(params):
        normal = distrax.Normal(params["loc"], jnp.exp(params["log_scale"]))
        return distrax.Independent(normal, ndims)

    def distribution(params):
        mixing = distrax.Categorical(logits=params["logits"])
        return distrax.MixtureSameFamily(mixing, components(params))

    def weighted_sample(params, key, n):
        if n < k:
            raise ValueError(
                f"gaussian_mixture: reverse KL draws every component, so it needs n >= "
                f"num_components = {k} samples, got n = {n}"
            )
        which = np.arange(n) % k  # component of each draw (static)
        counts = np.bincount(which, minlength=k)
        eps = jax.random.normal(key, (n, *shape), params["loc"].dtype)
        scale = jnp.exp(params["log_scale"])
        z = params["loc"][which] + scale[which] * eps
        log_pi = jax.nn.log_softmax(params["logits"])
        w = jnp.exp(log_pi)[which] / jnp.asarray(counts[which], z.dtype)
        return z, distribution(params).log_prob(z), w

    return TrainableBase(shape, init, distribution, weighted_sample)


__all__ = ["TrainableBase", "diagonal_normal", "gaussian_mixture", "student_t"]
