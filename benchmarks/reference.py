"""Hand-written reference flows for throughput.py: the same architectures in plain jax.numpy.

No flowjax_lab code: batched matmuls on stacked weights, one ``lax.scan`` over layers, exp
scales, the reverse permutation as a constant gather. They measure how fast these models can
run on this machine with XLA, so throughput.py can show what a ratio against flowjax is
bounded by. ``nsf_floor`` is the NSF's conditioners (MLP with 4 x 23 outputs per layer) with an
affine transformer on two of the 23 outputs: a lower bound on the time of any NSF step with
the same conditioners, whatever its spline costs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _dense(key, n_in, n_out, scale=1.0):
    return scale * jax.random.normal(key, (n_in, n_out)) / math.sqrt(n_in), jnp.zeros(n_out)


def _stacked(layers):
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


def _gaussian(z, log_det):
    d = z.shape[-1]
    return -0.5 * jnp.sum(z**2, -1) - 0.5 * d * math.log(2 * math.pi) + log_det


def made_masks(d: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MADE masks for 2 hidden layers and 2 outputs per dimension laid out as (shift | scale)."""
    deg_in = np.arange(1, d + 1)
    deg_h = np.arange(width) % max(1, d - 1) + 1
    m1 = (deg_h[None, :] >= deg_in[:, None]).astype(np.float32)
    m2 = (deg_h[None, :] >= deg_h[:, None]).astype(np.float32)
    m3 = (np.tile(deg_in, 2)[None, :] > deg_h[:, None]).astype(np.float32)
    return m1, m2, m3


def maf(key, d: int, width: int, layers: int):
    """(params, log_prob(params, x)) of a MAF: MADE 2 x width, affine, reverse between layers."""
    masks = [jnp.asarray(m) for m in made_masks(d, width)]
    rev = np.arange(d - 1, -1, -1)

    def layer(k):
        k1, k2, k3 = jax.random.split(k, 3)
        (w1, b1), (w2, b2), (w3, b3) = (
            _dense(k1, d, width),
            _dense(k2, width, width),
            _dense(k3, width, 2 * d, 0.01),
        )
        return {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3}

    params = _stacked([layer(k) for k in jax.random.split(key, layers)])

    def log_prob(params, x):
        def body(x, p):
            h = jax.nn.relu(x @ (p["w1"] * masks[0]) + p["b1"])
            h = jax.nn.relu(h @ (p["w2"] * masks[1]) + p["b2"])
            out = h @ (p["w3"] * masks[2]) + p["b3"]
            shift, log_scale = out[:, :d], out[:, d:]
            return ((x - shift) * jnp.exp(-log_scale))[:, rev], -jnp.sum(log_scale, -1)

        z, log_dets = jax.lax.scan(body, x, params)
        return _gaussian(z, jnp.sum(log_dets, 0))

    return params, log_prob


def coupling(key, d: int, width: int, layers: int, outputs_per_dim: int = 2):
    """(params, log_prob) of a RealNVP: affine coupling on the second half, MLP 2 x width.

    ``outputs_per_dim`` > 2 widens the conditioner's output layer (the NSF's is 3K - 1 = 23)
    while the transformer still uses only shift and log-scale: the NSF floor.
    """
    k = d // 2
    rev = np.arange(d - 1, -1, -1)
    n_out = (d - k) * outputs_per_dim

    def layer(key):
        k1, k2, k3 = jax.random.split(key, 3)
        (w1, b1), (w2, b2), (w3, b3) = (
            _dense(k1, k, width),
            _dense(k2, width, width),
            _dense(k3, width, n_out, 0.01),
        )
        return {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "b3": b3}

    params = _stacked([layer(key) for key in jax.random.split(key, layers)])

    def log_prob(params, x):
        def body(x, p):
            xa, xb = x[:, :k], x[:, k:]
            h = jax.nn.relu(xa @ p["w1"] + p["b1"])
            h = jax.nn.relu(h @ p["w2"] + p["b2"])
            out = h @ p["w3"] + p["b3"]
            shift, log_scale = out[:, : d - k], out[:, d - k : 2 * (d - k)]
            zb = (xb - shift) * jnp.exp(-log_scale)
            return jnp.concatenate([xa, zb], 1)[:, rev], -jnp.sum(log_scale, -1)

        z, log_dets = jax.lax.scan(body, x, params)
        return _gaussian(z, jnp.sum(log_dets, 0))

    return params, log_prob
