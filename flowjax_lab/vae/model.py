"""``vae(...)``: a variational autoencoder as a NamedTuple of pure functions (Kingma & Welling 2014).

Model p(x, z) = p(x | z) p(z): a decoder net gives the likelihood's params from z; the prior
p(z) is N(0, I) or any ``fl.Flow`` over the latent (params inside the VAE's). Posterior q(z | x)
is amortised: an encoder gives [mu, log_sigma, h] for x, and `posterior.iaf_posterior` maps
eps ~ N(0, I) to z (diagonal Gaussian, then IAF steps conditioned on h), or
`posterior.sylvester_posterior` (diagonal Gaussian, then Sylvester steps whose params are linear
functions of h). The bounds are the public objectives ``fl.objectives.elbo`` / ``iwae_bound``
applied to ``log_joint`` and ``sample_and_log_q``. Params: {"encoder", "decoder"[, "posterior"][, "prior"]}, a pytree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab.checks import positive_int
from flowjax_lab.core import as_key
from flowjax_lab.flow import Flow, make_flow, standard_normal
from flowjax_lab.models import maf
from flowjax_lab.objectives import ESTIMATORS, check_num_samples, elbo, iwae_bound
from flowjax_lab.transforms.sylvester import KINDS as SYLVESTER_KINDS
from flowjax_lab.vae.nets import LIKELIHOODS, NETWORKS, activation_fn
from flowjax_lab.vae.posterior import iaf_posterior, posterior_context_dim, sylvester_posterior

POSTERIORS = ("diagonal", "iaf", "sylvester")
PRIORS = ("normal", "flow")


class VAE(NamedTuple):
    """A VAE's pure functions. Event-level functions take ONE x and z; the rest take batches.

    Attributes:
      init: ``init(key) -> params``.
      log_joint: ``(params, x, z) -> log p(x | z) + log p(z)``, one x, one z.
      log_q: ``(params, x, z) -> log q(z | x)``, one x, one z (an IAF posterior's density
        direction: d sequential passes per step; used by DReG).
      sample_and_log_q: ``(params, x, key, k) -> (z (k, d), log q (k,))``, one x.
      elbo: ``(params, x, key, k=1) -> (n,)`` per-example ELBO of a batch x (n, *data_shape).
      iwae: ``(params, x, key, k, estimator="plain") -> (n,)`` per-example IWAE-k bound.
      encode: ``(params, x) -> (n, 2 d + context_dim)``, the posterior's context [mu, log_sigma, h].
      decode: ``(params, z) -> (n, *data_shape)``, the decoder's mean E[x | z].
      reconstruct: ``(params, x, key) -> (n, *data_shape)``, decoder mean at one z ~ q(z | x).
      sample: ``(params, key, n) -> (n, *data_shape)``, decoder mean at z ~ p(z).
      check_data: ``(x, where) -> None``: ValueError on a wrong shape, or (Bernoulli) values not
        in {0, 1}, naming them. The batched functions call it on concrete (non-traced) input.
      data_shape, latent_dim, likelihood, posterior (a conditional ``Flow`` over z), prior
        (a ``Flow`` or None for N(0, I)).
    """

    init: Callable
    log_joint: Callable
    log_q: Callable
    sample_and_log_q: Callable
    elbo: Callable
    iwae: Callable
    encode: Callable
    decode: Callable
    reconstruct: Callable
    sample: Callable
    check_data: Callable
    data_shape: tuple[int, ...]
    latent_dim: int
    likelihood: str
    posterior: Flow
    prior: Flow | None


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"vae: {name} must be one of {list(allowed)}, got {value!r}")


def _check_int(name, value, lo):
    return positive_int(value, f"vae: {name}", minimum=lo)


class _Sizes(NamedTuple):
    data_shape: tuple[int, ...]
    d: int
    hidden: tuple[int, ...]
    steps: int  # flow steps of the posterior (IAF or Sylvester; 0: diagonal Gaussian)
    iaf_hidden: tuple[int, ...]
    context_dim: int
    prior_flow: Flow | None
    num_vectors: int | None  # Sylvester M (None: d)


def _check_args(
    data_shape, latent_dim, hidden, likelihood, posterior, iaf_steps, iaf_hidden,
    context_dim, prior, prior_flow, network, sylvester_steps, sylvester_kind, num_vectors,
) -> _Sizes:  # fmt: skip
    """``vae``'s arguments checked and resolved (defaults filled in); ValueErrors name them."""
    data_shape = tuple(int(s) for s in data_shape)
    if not data_shape or any(s < 1 for s in data_shape):
        raise ValueError(
            f"vae: data_shape must be a non-empty tuple of positive sizes, got {data_shape}"
        )
    d = _check_int("latent_dim", latent_dim, 1)
    hidden = tuple(_check_int("hidden width", w, 1) for w in hidden)
    _choice("likelihood", likelihood, LIKELIHOODS)
    _choice("posterior", posterior, POSTERIORS)
    _choice("prior", prior, PRIORS)
    _choice("network", network, NETWORKS)
    if network == "conv" and (len(data_shape) != 3 or not hidden):
        raise ValueError(
            f"vae: network='conv' needs an image data_shape (H, W, C) and hidden widths, got "
            f"data_shape {data_shape}, hidden {hidden}"
        )
    steps = _check_int("iaf_steps", iaf_steps, 1) if posterior == "iaf" else 0
    if posterior == "sylvester":
        steps = _check_int("sylvester_steps", sylvester_steps, 1)
        _choice("sylvester_kind", sylvester_kind, SYLVESTER_KINDS)
        if num_vectors is not None:
            num_vectors = positive_int(num_vectors, "vae: num_vectors", maximum=d)
    iaf_hidden = hidden if iaf_hidden is None else tuple(iaf_hidden)
    c_dim = (
        (d if steps else 0) if context_dim is None else _check_int("context_dim", context_dim, 0)
    )
    if prior == "normal" and prior_flow is not None:
        raise ValueError("vae: prior_flow= is given but prior='normal'; pass prior='flow'")
    if prior == "flow":
        if prior_flow is None:
            prior_flow = maf(d, 2, iaf_hidden or (64,))
        if not isinstance(prior_flow, Flow):
            raise ValueError(f"vae: prior_flow must be an fl.Flow, got {type(prior_flow).__name__}")
        if tuple(prior_flow.event_shape) != (d,):
            raise ValueError(
                f"vae: latent size mismatch: the encoder's latent_dim is {d} but prior_flow's "
                f"event shape is {tuple(prior_flow.event_shape)}; they must match"
            )
    return _Sizes(data_shape, d, hidden, steps, iaf_hidden, c_dim, prior_flow, num_vectors)


def _check_data(x, where, data_shape, likelihood) -> None:
    """ValueError on a batch of the wrong shape; on concrete input also on non-float, NaN/inf
    or (Bernoulli) non-binary values, naming them."""
    shape = tuple(jnp.shape(x))
    if len(shape) != 1 + len(data_shape) or shape[1:] != data_shape:
        raise ValueError(
            f"{where}: expected a batch of shape (n, *{data_shape}), got shape {shape}"
        )
    if isinstance(x, jax.core.Tracer):
        return
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where}: expected floating-point data, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: {int((~np.isfinite(x)).sum())} NaN/inf values")
    if likelihood == "bernoulli":
        bad = (x != 0) & (x != 1)
        if bad.any():
            vals = np.unique(x[bad])
            raise ValueError(
                f"{where}: a Bernoulli likelihood needs binary data in {{0, 1}}, got "
                f"{int(bad.sum())} other values, e.g. {vals[:5].tolist()} (binarise "
                "intensities first, or train with fit(..., binarize='dynamic'))"
            )


def vae(
    data_shape: Sequence[int] = (784,),
    latent_dim: int = 50,
    hidden: Sequence[int] = (200, 200),
    *,
    likelihood: str = "bernoulli",
    posterior: str = "diagonal",
    iaf_steps: int = 2,
    iaf_hidden: Sequence[int] | None = None,
    context_dim: int | None = None,
    prior: str = "normal",
    prior_flow: Flow | None = None,
    network: str = "mlp",
    activation: Any = "relu",
    sylvester_steps: int = 4,
    sylvester_kind: str = "orthogonal",
    num_vectors: int | None = None,
) -> VAE:
    """A VAE with a diagonal-Gaussian, IAF (Kingma et al. 2016) or Sylvester (van den Berg et al.
    2018) posterior and an optional flow prior.

    Args:
      data_shape: one event's shape: (D,) for the MLP, (H, W, C) for either network.
      latent_dim: d.
      hidden: encoder hidden widths (the decoder uses them reversed). "conv" uses hidden[-1]
        for its dense layer.
      likelihood: "bernoulli" (data in {0, 1}; decoder gives logits) or "gaussian" (decoder
        gives mean and log-scale per element).
      posterior: "diagonal" (z = mu + sigma eps) or "iaf" (then ``iaf_steps`` IAF steps with
        MADE widths ``iaf_hidden``, default ``hidden``, conditioned on an encoder context h of
        ``context_dim`` features, default d; 0 for none) or "sylvester" (then
        ``sylvester_steps`` Sylvester steps of kind ``sylvester_kind``, "orthogonal",
        "householder" or "triangular", with ``num_vectors`` M <= d (default d), their params
        linear heads of the encoder's context h of ``context_dim`` features, default d:
        `posterior.sylvester_posterior`).
      prior: "normal" (N(0, I)) or "flow": ``prior_flow``, any ``fl.Flow`` with event shape
        (d,) (default ``fl.models.maf(d, 2, iaf_hidden)``).
      network: "mlp" or "conv" (two stride-2 3x3 convolutions each way).
      activation: "relu", "tanh", "elu", "softplus" or a callable.

    Raises:
      ValueError: a bad choice or size, naming it; a prior flow whose event shape is not (d,),
        naming both sizes.

    Example:
      >>> model = vae((64,), latent_dim=8, hidden=(64,), posterior="iaf")
      >>> params = model.init(jax.random.key(0))
      >>> model.iwae(params, x, jax.random.key(1), k=5).shape  # x: (n, 64) in {0, 1}
    """
    data_shape, d, hidden, steps, iaf_hidden, c_dim, prior_flow, num_vectors = _check_args(
        data_shape, latent_dim, hidden, likelihood, posterior, iaf_steps, iaf_hidden,
        context_dim, prior, prior_flow, network, sylvester_steps, sylvester_kind, num_vectors,
    )  # fmt: skip
    act = activation_fn(activation)
    lik = LIKELIHOODS[likelihood]
    enc_cls, dec_cls = NETWORKS[network]
    encoder = enc_cls(hidden, posterior_context_dim(d, c_dim), act)
    decoder = dec_cls(tuple(reversed(hidden)), data_shape, lik.channels, act)
    dtype = jnp.zeros(()).dtype  # float64 under JAX_ENABLE_X64
    if posterior == "sylvester":
        post_t = sylvester_posterior(d, steps, sylvester_kind, num_vectors, c_dim)
    else:
        post_t = iaf_posterior(d, steps, iaf_hidden, c_dim)
    post = make_flow(post_t, standard_normal((d,), dtype))

    def init(key):
        k_enc, k_dec, k_post, k_prior = jax.random.split(as_key(key), 4)
        params = {
            "encoder": encoder.init(k_enc, jnp.zeros(data_shape, dtype))["params"],
            "decoder": decoder.init(k_dec, jnp.zeros((d,), dtype))["params"],
        }
        if steps:
            params["posterior"] = post.init(k_post)
        if prior_flow is not None:
            params["prior"] = prior_flow.init(k_prior)
        return params

    def check_data(x, where="vae"):
        _check_data(x, where, data_shape, likelihood)

    def _context(params, x):
        return encoder.apply({"params": params["encoder"]}, x)

    def _log_prior(params, z):
        if prior_flow is None:
            return jnp.sum(-0.5 * z**2) - 0.5 * d * np.log(2 * np.pi)
        return prior_flow.log_prob(params["prior"], z)

    def log_joint(params, x, z):
        raw = decoder.apply({"params": params["decoder"]}, z)
        return lik.log_prob(x, raw) + _log_prior(params, z)

    def log_q(params, x, z):
        return post.log_prob(params.get("posterior", {}), z, _context(params, x))

    def sample_and_log_q(params, x, key, k):
        k = check_num_samples(k)
        return post.sample_and_log_prob(params.get("posterior", {}), key, k, _context(params, x))

    def _per_example(bound, params, x, key, where):
        check_data(x, where)
        keys = jax.random.split(as_key(key), x.shape[0])
        return jax.vmap(bound, (None, 0, 0))(params, x, keys)

    def elbo_batch(params, x, key, k=1):
        return _per_example(elbo(log_joint, sample_and_log_q, k), params, x, key, "vae.elbo")

    def iwae_batch(params, x, key, k, estimator="plain"):
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"vae.iwae: estimator must be one of {list(ESTIMATORS)}, got {estimator!r}"
            )
        bound = iwae_bound(log_joint, sample_and_log_q, k, estimator, log_q)
        return _per_example(bound, params, x, key, "vae.iwae")

    def encode(params, x):
        check_data(x, "vae.encode")
        return jax.vmap(_context, (None, 0))(params, x)

    def decode(params, z):
        if jnp.ndim(z) != 2 or jnp.shape(z)[1] != d:
            raise ValueError(f"vae.decode: expected latents of shape (n, {d}), got {jnp.shape(z)}")
        return lik.mean(jax.vmap(lambda zi: decoder.apply({"params": params["decoder"]}, zi))(z))

    def reconstruct(params, x, key):
        check_data(x, "vae.reconstruct")
        keys = jax.random.split(as_key(key), x.shape[0])
        z = jax.vmap(lambda xi, ki: sample_and_log_q(params, xi, ki, 1)[0][0])(x, keys)
        return decode(params, z)

    def sample(params, key, n):
        n = check_num_samples(n, "vae.sample: n")
        if prior_flow is None:
            z = jax.random.normal(as_key(key), (n, d), dtype)
        else:
            z = prior_flow.sample(params["prior"], key, n)
        return decode(params, z)

    return VAE(
        init, log_joint, log_q, sample_and_log_q, elbo_batch, iwae_batch, encode, decode,
        reconstruct, sample, check_data, data_shape, d, likelihood, post, prior_flow,
    )  # fmt: skip


__all__ = ["POSTERIORS", "PRIORS", "VAE", "vae"]
