"""Glow on dequantised MNIST: test bits/dim within a time budget, 1x1 vs emerging convolutions.

Data: ``fl.data.load_mnist_images(pad=...)`` (the classic 50k / 10k / 10k split, uint8 pixels),
dequantised afresh every step, x = (p + u) / 256 with u ~ U[0, 1) from fold_in(key, step); the
test set with one fixed draw. bits/dim = (NLL + D log 256) / (D log 2) over the D = H W C values
of the event (``fl.bits_per_dim(nll, D, num_levels=256)``): with ``--pad 2`` (32x32, as
openai/glow lays MNIST out, so that 3 squeezes fit) the padded zeros cost almost nothing, so the
table also gives bits per MNIST pixel, the same total bits over 784.

Model: ``fl.models.glow(image_shape, levels, steps_per_level, hidden_channels, coupling,
mixing)`` with actnorm data init on 256 images; adam with Glow's linear warm-up then a constant
rate, global-norm clipping. The first mixing in ``--mixings`` trains for ``--steps`` or
``--minutes``, whichever ends first; every other mixing then trains for the same number of steps
(equal steps, not equal time). Runs unchanged on CPU, GPU or TPU (the device is printed).

Run: python benchmarks/glow_mnist.py --minutes 25           # CPU: small Glow, 2 levels, 28x28
     python benchmarks/glow_mnist.py --full                  # GPU: the published 1.05 schedule
     python benchmarks/glow_mnist.py --minutes 1 --test-rows 500   # smoke run

``--full`` is L = 3, K = 32, 512 channels, 32x32 padding, batch 64, lr 1e-3, 200,000 steps
(~256 epochs): the Glow paper's 32x32 architecture.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax_lab as fl
from _common import categorical_bits, device_info, print_table, vector_nsf, write_results
from flowjax_lab import data as D
from flowjax_lab.objectives import mean_and_se

PUBLISHED = 1.05  # Glow, MNIST, test bits/dim
CPU = dict(pad=0, levels=2, steps_per_level=4, hidden_channels=64, batch=32, steps=100000)
FULL = dict(pad=2, levels=3, steps_per_level=32, hidden_channels=512, batch=64, steps=200000)


def build(args, mixing: str, shape: tuple[int, ...]) -> tuple[fl.Flow, tuple[int, ...]]:
    """(flow, event shape) of one row: a Glow with this mixing, or ``"nsf"``, the vector NSF."""
    if mixing == "nsf":
        dim = int(np.prod(shape))
        return vector_nsf(dim), (dim,)
    flow = fl.models.glow(
        shape, args.levels, args.steps_per_level, args.hidden_channels, args.coupling, mixing,
        random_rotation=not args.identity_init, preprocessing=args.preprocessing,
    )  # fmt: skip
    return flow, shape


def train_one(args, mixing: str, images, max_steps: int, minutes: float | None) -> dict:
    """Train one flow; returns its row (test bits/dim +- SE, steps, wall time)."""
    flow, shape = build(args, mixing, images.train.shape[1:])
    dim = int(np.prod(shape))
    train_pixels = images.train.reshape(len(images.train), *shape)
    key = jax.random.key(args.seed)
    k_init, k_noise, k_test = jax.random.split(key, 3)

    def dequantize(k, p):
        return fl.objectives.uniform_dequantize_pixels(k, p.astype(jnp.float32), 256)

    first = dequantize(k_init, jnp.asarray(train_pixels[:256]))
    params = jax.jit(lambda k, x: fl.data_init(flow, k, x))(k_init, first)
    trainable, fixed = fl.partition(params)
    lr = optax.join_schedules(
        [optax.linear_schedule(0.0, args.lr, args.warmup), optax.constant_schedule(args.lr)],
        [args.warmup],
    )
    opt = optax.chain(optax.clip_by_global_norm(args.clip), optax.adam(lr))
    opt_state = opt.init(trainable)
    loss_fn = fl.forward_kl(flow)

    @jax.jit
    def step(tr, opt_state, pixels, k):
        x = dequantize(k, pixels)
        nll, grads = jax.value_and_grad(lambda t: loss_fn(fl.combine(t, fixed), x))(tr)
        updates, opt_state = opt.update(grads, opt_state, tr)
        return optax.apply_updates(tr, updates), opt_state, nll

    to_bits = lambda nll: (nll + dim * math.log(256)) / (dim * math.log(2))  # noqa: E731
    rng = np.random.default_rng(args.seed)
    n = len(images.train)
    start, s, recent = time.perf_counter(), 0, []
    compile_s = None
    while s < max_steps:
        rows = rng.integers(0, n, args.batch)
        trainable, opt_state, nll = step(
            trainable, opt_state, train_pixels[rows], jax.random.fold_in(k_noise, s)
        )
        s += 1
        if s == 1:
            nll.block_until_ready()
            compile_s = time.perf_counter() - start
        if s % 100 == 0 or s == max_steps:
            recent.append(float(nll))
            elapsed = time.perf_counter() - start
            if s % args.print_every == 0:
                print(
                    f"  {mixing} step {s}: train {to_bits(np.mean(recent[-5:])):.3f} bits/dim, "
                    f"{elapsed / 60:.1f} min",
                    flush=True,
                )
            if minutes is not None and elapsed > 60 * minutes:
                break
    wall = time.perf_counter() - start
    if not np.isfinite(float(nll)):
        raise FloatingPointError(f"{mixing}: training diverged by step {s}")
    params = fl.combine(trainable, fixed)
    log_prob = jax.jit(flow.log_prob)
    test = images.test[: args.test_rows].reshape(-1, *shape)
    x_test = dequantize(k_test, jnp.asarray(test))
    lp = np.concatenate(
        [np.asarray(log_prob(params, x_test[i : i + 100])) for i in range(0, len(test), 100)]
    )
    bits = np.asarray(fl.bits_per_dim(-lp.astype(np.float64), dim, num_levels=256))
    return {
        "mixing": mixing,
        "image": "x".join(map(str, images.train.shape[1:])),
        "steps": s,
        "train min": wall / 60,
        "compile s": compile_s,
        "test bits/dim": float(bits.mean()),
        "+- SE": float(bits.std(ddof=1) / math.sqrt(len(bits))),
        "bits/MNIST pixel": float(bits.mean() * dim / 784),
        "test rows": len(test),
    }


def main(args) -> None:
    info = device_info()
    print(f"device: {info['platform']} {info['device']} x{info['num_devices']}, jax {info['jax']}")
    images = D.load_mnist_images(pad=args.pad)
    mixings = args.mixings.split(",")
    rows = [train_one(args, mixings[0], images, args.steps, args.minutes)]
    for mixing in mixings[1:]:
        rows.append(train_one(args, mixing, images, rows[0]["steps"], None))
    bits = categorical_bits(images.train, images.test[: args.test_rows], 256)
    rows.append({"mixing": "per-pixel categorical (add-one)", "image": rows[0]["image"],
                 "test bits/dim": float(bits.mean()), "+- SE": float(mean_and_se(bits)[1]),
                 "bits/MNIST pixel": float(bits.mean() * np.prod(images.test.shape[1:]) / 784)})  # fmt: skip
    rows.append({"mixing": "Glow (published)", "test bits/dim": PUBLISHED})
    columns = [
        "mixing",
        "image",
        "steps",
        "train min",
        "compile s",
        "test bits/dim",
        "+- SE",
        "bits/MNIST pixel",
        "test rows",
    ]
    print(
        f"Glow L={args.levels} K={args.steps_per_level} {args.hidden_channels} channels, "
        f"{args.coupling} coupling, preprocessing {args.preprocessing}, "
        f"{'identity' if args.identity_init else 'random-rotation'} init, "
        f"batch {args.batch}, lr {args.lr}"
    )
    print_table(rows, columns)
    print(f"wrote {write_results('glow_mnist', rows, {'args': vars(args)})}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the GPU schedule for 1.05 bits/dim")
    parser.add_argument("--minutes", type=float, default=None, help="time budget of the first run")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--pad", type=int, default=None, help="zero pixels added on each side")
    parser.add_argument("--levels", type=int, default=None)
    parser.add_argument("--steps-per-level", type=int, default=None)
    parser.add_argument("--hidden-channels", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument(
        "--coupling", default="spline", choices=["affine", "glow_affine", "additive", "spline"]
    )
    parser.add_argument(
        "--preprocessing", default="logit", type=lambda v: None if v == "none" else v,
        choices=["logit", "center", None], help="logit | center | none (fl.models.glow's option)",
    )  # fmt: skip
    parser.add_argument(
        "--identity-init", action="store_true", help="mixings start at W = I (not a rotation)"
    )
    parser.add_argument(
        "--mixings", default="conv1x1_lu,emerging,nsf",
        help="comma-separated; 'nsf' is the vector NSF baseline on the flattened image",
    )  # fmt: skip
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--clip", type=float, default=50.0)
    parser.add_argument("--test-rows", type=int, default=10000)
    parser.add_argument("--print-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, value in (FULL if args.full else CPU).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    main(args)
