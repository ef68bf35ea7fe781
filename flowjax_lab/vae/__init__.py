"""Variational autoencoders with amortised IAF or Sylvester posteriors and ELBO / IWAE training.

``fl.vae.vae(...)`` returns a `VAE` NamedTuple of pure functions (init/apply style, flax.linen
nets, params a pytree); ``fl.fit(key, model, params, objective="elbo" | {"iwae": k} |
{"iwae_dreg": k}, data=..., binarize="dynamic")`` trains it; ``iwae_log_likelihood`` estimates
test log p(x) by IWAE-k, chunked over k. ``iaf_posterior`` and ``sylvester_posterior`` are
the posterior transforms (diagonal Gaussian then IAF steps conditioned on the encoder's context
h, or Sylvester steps whose params are linear heads of h).
"""

from flowjax_lab.vae.evaluate import iwae_log_likelihood, mean_and_se
from flowjax_lab.vae.model import POSTERIORS, PRIORS, VAE, vae
from flowjax_lab.vae.nets import ACTIVATIONS, LIKELIHOODS, NETWORKS
from flowjax_lab.vae.posterior import iaf_posterior, sylvester_posterior

__all__ = [
    "ACTIVATIONS",
    "LIKELIHOODS",
    "NETWORKS",
    "POSTERIORS",
    "PRIORS",
    "VAE",
    "iaf_posterior",
    "iwae_log_likelihood",
    "mean_and_se",
    "sylvester_posterior",
    "vae",
]
