"""Glow train-step throughput (images/s) against a hand-written JAX Glow, and compile time.

Model: ``fl.models.glow((28, 28, 1), levels=2, steps_per_level=K, hidden_channels=64)``
(affine couplings, LU 1x1 convolutions, learned split prior) on MNIST pixels dequantised as
x = (p + u) / 256. 28 x 28 squeezes twice (28 -> 14 -> 7), so no padding is needed for 2
levels; 3 levels would need a pad to 32 x 32. The baseline is the same network written by hand:
batched jax.numpy / lax.conv_general_dilated, a Python loop over the steps (unrolled), no
library code; it reads the library's params and its log-likelihood is checked to match.

A train step is loss = mean NLL, its gradient and an Adam update, jitted, on a batch of 64.
Throughput is the batch over the median step time; compile time is lowering + compiling the
step, at K = 2 and K = 8 steps per level (the library's scan body is traced once per level, so
its compile time stays flat in K; the unrolled baseline's grows).

Run: python benchmarks/glow_throughput.py   (CPU, GPU or TPU; prints the device)
"""

import math

import jax
import jax.numpy as jnp
import optax

import flowjax_lab as fl
from _common import compile_seconds, device_info, print_table, time_call, write_results
from flowjax_lab.data import load_mnist_pixels

LOG_SCALE_BOUND = 5.0  # the library's soft clamp of coupling log-scales


# --------------------------------------------------------------------------- hand-written Glow


def _squeeze(x):
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, h // 2, w // 2, 4 * c)


def _conv(x, layer):
    y = jax.lax.conv_general_dilated(
        x, layer["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + layer["bias"]


def _coupling(x, net):
    c = x.shape[-1]
    xa, xb = x[..., : c // 2], x[..., c // 2 :]
    h = xa
    if "conv_in" in net:
        h = jax.nn.relu(_conv(jax.nn.relu(_conv(h, net["conv_in"])), net["conv_mid"]))
    raw = _conv(h, net["output"]).reshape(*xb.shape, 2)
    log_scale = LOG_SCALE_BOUND * jnp.tanh(raw[..., 1] / LOG_SCALE_BOUND)
    zb = (xb - raw[..., 0]) * jnp.exp(-log_scale)
    return jnp.concatenate([xa, zb], -1), -jnp.sum(log_scale, axis=(1, 2, 3))


def _step(x, p):
    act, lu, coupling = p
    pixels = x.shape[1] * x.shape[2]
    x = (x - act["shift"]) * jnp.exp(-act["log_scale"])
    ld = -pixels * jnp.sum(act["log_scale"])
    c = x.shape[-1]
    lower = jnp.tril(lu["lower"], -1) + jnp.eye(c, dtype=x.dtype)
    upper = jnp.triu(lu["upper"], 1) + jnp.diag(lu["sign"] * jnp.exp(lu["log_diag"]))
    x = (x @ (lower @ upper).T)[..., lu["perm"]]  # W = P L U, Glow's random-rotation init
    ld = ld + pixels * jnp.sum(lu["log_diag"])
    x, ld_c = _coupling(x, coupling["conditioner"])
    return x, ld + ld_c


def _std_normal(z):
    return -0.5 * jnp.sum(z**2 + math.log(2 * math.pi), axis=(1, 2, 3))


def hand_log_prob(params, x, steps_per_level):
    """log p(x) of the same Glow: squeeze, K steps, split (learned prior) per level."""
    total = jnp.zeros(x.shape[0], x.dtype)
    for level, p in enumerate(params):
        x = _squeeze(x)
        for k in range(steps_per_level):  # unrolled: a plain loop, no scan
            x, ld = _step(x, jax.tree.map(lambda a, k=k: a[k], p["step"]))
            total = total + ld
        if level < len(params) - 1:
            x, ld = _coupling(x, p["prior"]["conditioner"])
            half = x.shape[-1] // 2
            total = total + ld + _std_normal(x[..., half:])
            x = x[..., :half]
    return total + _std_normal(x)


# --------------------------------------------------------------------------- benchmark


def _train_step(loss, optimizer, fixed):
    """One adam step on the float leaves; ``fixed`` holds the integer ones (the LU P and signs)."""

    def step(trainable, opt_state, batch):
        value, grads = jax.value_and_grad(lambda t: loss(fl.combine(t, fixed), batch))(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, value

    return step


def main(batch: int = 64, hidden: int = 64, levels: int = 2, repeats: int = 7) -> None:
    print("device:", device_info())
    pixels = load_mnist_pixels().train[:batch].reshape(batch, 28, 28, 1)
    x = jnp.asarray(fl.data.dequantize_images(jax.random.key(0), pixels, 256))
    optimizer = optax.adam(1e-3)
    rows = []
    for k in (2, 8):
        flow = fl.models.glow((28, 28, 1), levels, k, hidden, preprocessing=None)
        params = jax.jit(lambda key, b, flow=flow: fl.data_init(flow, key, b))(jax.random.key(1), x)
        params = fl.testing.randomize_params(jax.random.key(2), params, 0.01)
        ours = jax.jit(flow.log_prob)(params, x)
        hand = jax.jit(hand_log_prob, static_argnums=2)(params, x, k)
        err = float(jnp.max(jnp.abs(ours - hand) / jnp.abs(hand)))
        assert err < 1e-4, f"hand-written Glow disagrees with fl.models.glow: rel err {err:.2g}"
        trainable, fixed = fl.partition(params)
        opt_state = optimizer.init(trainable)
        losses = {
            "flowjax_lab": fl.forward_kl(flow),
            "hand-written": lambda p, b, k=k: -jnp.mean(hand_log_prob(p, b, k)),
        }
        for name, loss in losses.items():
            step = _train_step(loss, optimizer, fixed)
            compile_s = compile_seconds(step, trainable, opt_state, x)
            seconds = time_call(jax.jit(step), trainable, opt_state, x, repeats=repeats, warmup=2)
            rows.append(
                {
                    "impl": name,
                    "steps_per_level": k,
                    "layers": levels * k,
                    "batch": batch,
                    "step_ms": 1e3 * seconds,
                    "images_per_s": batch / seconds,
                    "compile_s": compile_s,
                    "max_rel_logp_diff": err,
                }
            )
            print(rows[-1])
    cols = ["impl", "steps_per_level", "layers", "batch", "step_ms", "images_per_s", "compile_s"]
    print_table(rows, cols)
    extra = {"image_shape": [28, 28, 1], "levels": levels, "hidden_channels": hidden}
    print("wrote", write_results("glow_throughput", rows, extra))


if __name__ == "__main__":
    main()
