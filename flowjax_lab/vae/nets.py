"""VAE networks (flax.linen) and observation likelihoods; one event in, vmap for batches.

* Encoders map one data event x to the posterior's context [mu, log_sigma, h] (length
  2 d + context_dim): `MLPEncoder` (x flattened) and `ConvEncoder` (x of shape (H, W, C)).
* Decoders map one latent z to the likelihood's raw params, shaped like x with ``out_channels``
  per element: `MLPDecoder` and `ConvDecoder`.
* Likelihoods ``log p(x | raw)`` and the decoder mean, for "bernoulli" (raw = logits) and
  "gaussian" (raw = [mean, log-scale], log-scale = 5 tanh(raw / 5), so sigma is in
  [e^-5, e^5]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flowjax_lab.nets import MLP

Array = jax.Array

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "elu": nn.elu, "softplus": nn.softplus}


def activation_fn(activation) -> Callable[[Array], Array]:
    """A nonlinearity from a name in ``ACTIVATIONS`` or a callable."""
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {list(ACTIVATIONS)} or a callable, got {activation!r}"
        )
    return ACTIVATIONS[activation]


def _lecun(fan_in: int) -> float:
    return 1.0 / math.sqrt(max(fan_in, 1))


class MLPEncoder(nn.Module):
    """x (any shape, flattened) -> MLP(hidden) -> a linear output of ``out_dim`` features."""

    hidden: Sequence[int]
    out_dim: int
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = self.hidden[-1] if self.hidden else x.size
        net = MLP(self.hidden, self.out_dim, self.activation, 0.1 * _lecun(fan_in), name="mlp")
        return net(x.reshape(-1))


class MLPDecoder(nn.Module):
    """z -> MLP(hidden) -> raw params of shape (*data_shape[:-1], data_shape[-1] * channels)."""

    hidden: Sequence[int]
    data_shape: tuple[int, ...]
    out_channels: int
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, z: Array) -> Array:
        shape = (*self.data_shape[:-1], self.data_shape[-1] * self.out_channels)
        fan_in = self.hidden[-1] if self.hidden else z.shape[-1]
        net = MLP(self.hidden, math.prod(shape), self.activation, _lecun(fan_in), name="mlp")
        return net(z).reshape(shape)


class ConvEncoder(nn.Module):
    """(H, W, C) -> 2 stride-2 3x3 convs (32, 64 channels) -> Dense(hidden[-1]) -> out_dim."""

    hidden: Sequence[int]
    out_dim: int
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        h = x
        for i, ch in enumerate((32, 64)):
            h = self.activation(nn.Conv(ch, (3, 3), (2, 2), param_dtype=dtype, name=f"conv_{i}")(h))
        h = self.activation(
            nn.Dense(self.hidden[-1], param_dtype=dtype, name="dense")(h.reshape(-1))
        )
        init = nn.initializers.normal(0.1 * _lecun(self.hidden[-1]))
        return nn.Dense(self.out_dim, kernel_init=init, param_dtype=dtype, name="output")(h)


class ConvDecoder(nn.Module):
    """z -> Dense(hidden[-1]) -> (ceil(H/4), ceil(W/4), 64) -> 2 stride-2 transposed convs,
    cropped to (H, W, C * out_channels)."""

    hidden: Sequence[int]
    data_shape: tuple[int, int, int]
    out_channels: int
    activation: Callable = nn.relu

    @nn.compact
    def __call__(self, z: Array) -> Array:
        height, width, channels = self.data_shape
        h4, w4 = -(-height // 4), -(-width // 4)
        dtype = jnp.promote_types(z.dtype, jnp.float32)
        h = self.activation(nn.Dense(self.hidden[-1], param_dtype=dtype, name="dense")(z))
        h = self.activation(nn.Dense(h4 * w4 * 64, param_dtype=dtype, name="project")(h))
        h = h.reshape(h4, w4, 64)
        h = self.activation(nn.ConvTranspose(32, (3, 3), (2, 2), param_dtype=dtype, name="up_0")(h))
        h = nn.ConvTranspose(
            channels * self.out_channels, (3, 3), (2, 2), param_dtype=dtype, name="up_1"
        )(h)
        return h[:height, :width]


# --------------------------------------------------------------------------- likelihoods


class Likelihood(NamedTuple):
    """``log_prob(x, raw) -> scalar`` (one event), ``mean(raw) -> x-shaped``, raw channels."""

    name: str
    channels: int
    log_prob: Callable
    mean: Callable


def _bernoulli_log_prob(x, logits):
    """sum_i x_i l_i - softplus(l_i) = sum_i log Bernoulli(x_i; sigmoid(l_i)), exact for x in {0,1}.

    softplus(l) = max(l, 0) + log1p(exp(-|l|)) written out: ~5x faster on CPU than
    ``jax.nn.softplus`` (a logaddexp), which was ~half of a 2 x 200 decoder pass's time.
    """
    softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.sum(x * logits - softplus)


def _split_gaussian(raw):
    c = raw.shape[-1] // 2
    return raw[..., :c], 5.0 * jnp.tanh(raw[..., c:] / 5.0)


def _gaussian_log_prob(x, raw):
    """sum_i log N(x_i; m_i, s_i^2), log s_i = 5 tanh(raw_i / 5)."""
    mean, log_scale = _split_gaussian(raw)
    return jnp.sum(
        -0.5 * ((x - mean) * jnp.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
    )


LIKELIHOODS = {
    "bernoulli": Likelihood("bernoulli", 1, _bernoulli_log_prob, jax.nn.sigmoid),
    "gaussian": Likelihood("gaussian", 2, _gaussian_log_prob, lambda raw: _split_gaussian(raw)[0]),
}

NETWORKS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}

__all__ = [
    "ACTIVATIONS",
    "LIKELIHOODS",
    "NETWORKS",
    "ConvDecoder",
    "ConvEncoder",
    "Likelihood",
    "MLPDecoder",
    "MLPEncoder",
    "activation_fn",
]
