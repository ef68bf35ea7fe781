"""Glow on sklearn's 8x8 digits: identity against random-rotation init of each channel mixing,
Glow's coupling scales and preprocessing, beside two baselines, at equal steps and seed.

Data: ``fl.data.load_digits_images(key(0))`` (integer pixels in 0..16, L = 17 levels; the
80 / 10 / 10 split). Training rows are dequantised afresh every step (``fl.fit(dequantize=17)``);
validation and test rows with one fixed draw each. Test bits/dim on the integer scale:
(NLL + D log 17) / (D log 2) with D = 64 (``fl.bits_per_dim(..., num_levels=17)``), mean and
standard error over test images; the params with the best validation NLL are scored.

Rows (``--rows``, comma list; all by default):

  categorical    independent per-pixel categorical fitted on train, add-one smoothing: the
                 exact discrete bits/dim of a model with no pixel dependence
  nsf            the vector NSF of configs/nsf_digits.yaml (8 coupling layers, MLPs 2 x 256,
                 8 bins, random permutations) behind RealNVP's logit (alpha 0.05) as the
                 flow's first layer, on the same split and dequantisation
  glow rows      ``fl.models.glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=32)``
                 named <mixing>-<init>-<coupling>[-<preprocessing>], e.g. conv1x1_lu-rot-affine

All flows train with ``fl.fit`` defaults except steps, batch and lr (``fl.default_optimizer``:
warm-up then cosine to lr / 10), from actnorm data init on 256 training images. Runs unchanged on
CPU, GPU or TPU (the device is printed).

Run: python benchmarks/glow_digits.py [--steps 3000] [--rows categorical,conv1x1_lu-rot-affine]
Results: a table on stdout and benchmarks/results/glow_digits.json (written after every row).
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import flowjax_lab as fl
from _common import (
    categorical_bits,
    device_info,
    load_average,
    print_table,
    vector_nsf,
    write_results,
)
from flowjax_lab.objectives import mean_and_se

GLOW_ROWS = [  # (mixing, random_rotation, coupling, preprocessing)
    ("conv1x1", False, "affine", None),
    ("conv1x1", True, "affine", None),
    ("conv1x1_lu", False, "affine", None),
    ("conv1x1_lu", True, "affine", None),
    ("emerging", False, "affine", None),
    ("emerging", True, "affine", None),
    ("conv1x1_lu", True, "glow_affine", None),
    ("conv1x1_lu", True, "additive", None),
    ("conv1x1_lu", True, "spline", None),
    ("conv1x1_lu", True, "affine", "center"),
    ("conv1x1_lu", True, "affine", "logit"),
    ("conv1x1", True, "affine", "logit"),
    ("emerging", True, "affine", "logit"),
    ("conv1x1_lu", True, "spline", "logit"),
]


def glow_name(mixing, rotation, coupling, preprocessing) -> str:
    name = f"{mixing}-{'rot' if rotation else 'id'}-{coupling}"
    return name if preprocessing is None else f"{name}-{preprocessing}"


ROWS = ["categorical", "nsf", *(glow_name(*r) for r in GLOW_ROWS)]


def build(name: str):
    """(flow, event shape) of a flow row."""
    if name == "nsf":
        return vector_nsf(64), (64,)
    mixing, rotation, coupling, preprocessing = next(r for r in GLOW_ROWS if glow_name(*r) == name)
    flow = fl.models.glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=32,
                          coupling=coupling, mixing=mixing, random_rotation=rotation,
                          preprocessing=preprocessing)  # fmt: skip
    return flow, (8, 8, 1)


def fit_row(name, args, splits, fixed_val, fixed_test) -> dict:
    flow, shape = build(name)
    train = splits.train.reshape(len(splits.train), *shape)
    val, test = (x.reshape(len(x), *shape) for x in (fixed_val, fixed_test))
    key = jax.random.key(args.seed)
    k_init, k_fit = jax.random.split(key)
    first = fl.data.dequantize_images(k_init, train[:256], splits.num_levels)
    params = jax.jit(lambda k, b: fl.data_init(flow, k, b))(k_init, first)
    start = time.perf_counter()
    result = fl.fit(k_fit, flow, params, data=train, dequantize=splits.num_levels,
                    steps=args.steps, batch_size=args.batch,
                    optimizer=fl.default_optimizer(args.steps, args.lr),
                    val_data=val, val_every=args.val_every, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    nll = -np.asarray(jax.jit(flow.log_prob)(result.params, jnp.asarray(test)), np.float64)
    bits = np.asarray(fl.bits_per_dim(nll, 64, num_levels=splits.num_levels))
    mean, se = mean_and_se(bits)
    return {"row": name, "test_bits_per_dim": mean, "se": se, "best_step": int(result.best_step),
            "steps": int(result.step), "train_s": round(seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {ROWS}")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {ROWS}")
    info = device_info()
    print(
        f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}"
    )
    print(f"load average at start: {load_average()}")
    splits = fl.data.load_digits_images(jax.random.key(0))
    levels = splits.num_levels
    fixed_val = fl.data.dequantize_images(jax.random.key(1), splits.val, levels)
    fixed_test = fl.data.dequantize_images(jax.random.key(2), splits.test, levels)
    print(f"train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)} images; "
          f"{args.steps} steps of batch {args.batch}, lr {args.lr}", flush=True)  # fmt: skip
    results = []
    for name in rows:
        if name == "categorical":
            bits = categorical_bits(splits.train, splits.test, levels)
            mean, se = mean_and_se(bits)
            row = {"row": name, "test_bits_per_dim": mean, "se": se}
        else:
            row = fit_row(name, args, splits, fixed_val, fixed_test)
        results.append(row)
        print(f"{name}: {row['test_bits_per_dim']:.4f} +- {row['se']:.4f} bits/dim", flush=True)
        path = write_results("glow_digits", results, {"args": vars(args)})
    print()
    print_table(results, ["row", "test_bits_per_dim", "se", "best_step", "steps", "train_s"])
    print(f"uniform over {levels} levels: {math.log2(levels):.4f} bits/dim; wrote {path}")


if __name__ == "__main__":
    main()
