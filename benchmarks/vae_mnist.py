"""VAE and IWAE on binarized MNIST: test log p(x) by IWAE k = 5000, the IWAE paper's protocol.

Model (the IWAE paper's small architecture, Burda et al. 2016, table 1): one stochastic layer of
50 latent units, encoder and decoder MLPs of 2 x 200 units, Bernoulli likelihood, N(0, I)
prior, built by ``fl.vae.vae``. Rows, all with the same steps, batch, optimiser and seed:

  vae       k = 1 (the ELBO), diagonal Gaussian posterior
  vae_iaf   k = 1 (the ELBO), IAF posterior (2 IAF steps, MADE 2 x 200, context h of 50)
  iwae_5    IWAE bound with k = 5, diagonal Gaussian posterior
  iwae_50   IWAE bound with k = 50, diagonal Gaussian posterior

Data: ``fl.data.load_binarized_mnist()``: 50,000 training images as intensities, binarised
afresh at every step (``fl.fit(..., binarize="dynamic")``); the 10,000 test images binarised
once with ``numpy.random.default_rng(0)``. Training runs through ``fl.fit`` (one compiled
loop per row; no validation, so every row runs exactly ``--steps`` steps).

Metric: test log p(x) = the mean over the first ``--eval-n`` test images (the same images for
every row; default 2,000 on the CPU schedule, since all 10,000 at k = 5000 take ~15 min per row
on 2 shared CPU cores; 10,000 with ``--full``) of IWAE-5000 (``--eval-k``), with its standard error over images,
drawn ``--eval-chunk`` samples at a time for ``--eval-batch`` images per call (memory: batch x
chunk decoder activations). Also the paired difference to the ``vae`` row on the same images
(per-image log p(x) are strongly correlated between models, so its s.e. is much smaller).

Schedules. Default (CPU): ``--steps`` steps of batch 20 (the paper's batch), adam (lr 1e-3,
eps 1e-4 as the paper) with a cosine decay to 1e-4. ``--full``: the paper's schedule, which
needs a GPU: train + validation (60,000 images, as the paper) for 3^0 + 3^1 + ... + 3^7 = 3,280
passes, pass block i at lr 1e-3 * 10^(-i / 7) (9.84 M steps of batch 20). The script runs
unchanged on CPU, GPU or TPU (it prints the device).

Anchors (IWAE paper, table 1, 1 stochastic layer, 3,280 passes): VAE -86.76, IWAE k = 5
-85.54, IWAE k = 50 -84.78 (their VAE k = 1 row; the IAF paper reports no 1-layer MLP number).

Run: python benchmarks/vae_mnist.py [--steps 25000] [--eval-n 10000] [--full] [--rows vae,...]
Results: a table on stdout and benchmarks/results/vae_mnist.json (written after every row).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax
import numpy as np
import optax

import flowjax_lab as fl
from _common import device_info, print_table, write_results
from flowjax_lab import data
from flowjax_lab.experiment.vaes import iwae_test_log_px

ROWS = {  # name: (posterior, objective)
    "vae": ("diagonal", "elbo"),
    "vae_iaf": ("iaf", "elbo"),
    "iwae_5": ("diagonal", {"iwae": 5}),
    "iwae_50": ("diagonal", {"iwae": 50}),
}
ANCHORS = {"vae": -86.76, "vae_iaf": None, "iwae_5": -85.54, "iwae_50": -84.78}
PAPER_PASSES = sum(3**i for i in range(8))  # 3,280


def paper_schedule(steps_per_pass: int) -> optax.Schedule:
    """lr 1e-3 * 10^(-i / 7) for 3^i passes, i = 0..7 (the IWAE paper's schedule)."""
    bounds, values, at = [], [1e-3], 0
    for i in range(7):
        at += 3**i * steps_per_pass
        bounds.append(at)
        values.append(1e-3 * 10 ** (-(i + 1) / 7))
    return optax.join_schedules([optax.constant_schedule(v) for v in values], bounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25000, help="training steps per row")
    parser.add_argument("--batch", type=int, default=20, help="images per step (paper: 20)")
    parser.add_argument("--full", action="store_true", help="the paper's 3,280-pass schedule")
    parser.add_argument("--eval-k", type=int, default=5000, help="IWAE samples per test image")
    parser.add_argument(
        "--eval-n", type=int, default=None, help="test images scored (default 2000; --full: 10000)"
    )
    parser.add_argument("--eval-chunk", type=int, default=250, help="IWAE samples per call")
    parser.add_argument("--eval-batch", type=int, default=4, help="test images per call")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {list(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="vae_mnist", help="results/<out>.json")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    info = device_info()
    print(
        f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}"
    )

    load_at_start = os.getloadavg()  # the machine is shared: record how busy it was
    print(f"load average at start: {load_at_start}")
    mnist = data.load_binarized_mnist()
    train = np.concatenate([mnist.train, mnist.val]) if args.full else mnist.train
    steps_per_pass = math.ceil(len(train) / args.batch)
    if args.full:
        steps = PAPER_PASSES * steps_per_pass
        schedule = paper_schedule(steps_per_pass)
    else:
        steps = args.steps
        schedule = optax.cosine_decay_schedule(1e-3, steps, alpha=0.1)
    eval_n = args.eval_n or (10000 if args.full else 2000)
    test = mnist.test[:eval_n]
    print(
        f"train {len(train)} images, {steps} steps of batch {args.batch} "
        f"({steps / steps_per_pass:.1f} passes); test log p(x) by IWAE-{args.eval_k} on "
        f"{len(test)} test images (binarised with default_rng({mnist.seed}))",
        flush=True,
    )
    key = jax.random.key(args.seed)
    k_init, k_fit, k_eval = jax.random.split(key, 3)
    results, per_image = [], {}
    for name in rows:
        posterior, objective = ROWS[name]
        model = fl.vae.vae((784,), latent_dim=50, hidden=(200, 200), posterior=posterior)
        params = jax.jit(model.init)(k_init)
        optimizer = optax.adam(schedule, eps=1e-4)
        start = time.perf_counter()
        result = fl.fit(
            k_fit,
            model,
            params,
            objective=objective,
            data=train,
            binarize="dynamic",
            steps=steps,
            batch_size=args.batch,
            optimizer=optimizer,
            steps_per_chunk=500,
            progress=False,
        )
        jax.block_until_ready(result.params)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        log_px = iwae_test_log_px(
            model, result.params, test, k_eval, args.eval_k, args.eval_chunk, args.eval_batch
        )
        eval_s = time.perf_counter() - start
        per_image[name] = log_px
        mean, se = fl.vae.mean_and_se(log_px)
        row = {
            "row": name,
            "posterior": posterior,
            "objective": objective if isinstance(objective, str) else f"iwae k={objective['iwae']}",
            "steps": int(result.step),
            "batch": args.batch,
            "epochs": round(result.step * args.batch / len(train), 2),
            "train_s": round(train_s, 1),
            "final_train_loss": float(np.nanmean(result.history["loss"][-500:])),
            "test_log_px": mean,
            "test_log_px_se": se,
            "eval_k": args.eval_k,
            "eval_n": len(test),
            "eval_s": round(eval_s, 1),
            "paper": ANCHORS[name],
        }
        if "vae" in per_image and name != "vae":
            row["minus_vae"], row["minus_vae_se"] = fl.vae.mean_and_se(log_px - per_image["vae"])
        results.append(row)
        print(
            f"{name}: log p(x) {mean:.2f} +- {se:.2f} (train {train_s:.0f} s, eval {eval_s:.0f} s)",
            flush=True,
        )
        path = write_results(
            args.out,
            results,
            {
                "args": vars(args),
                "paper_passes": PAPER_PASSES,
                "binarization_seed": mnist.seed,
                "load_average_at_start": load_at_start,
            },
        )
    print()
    print_table(
        results,
        [
            "row",
            "objective",
            "posterior",
            "steps",
            "epochs",
            "train_s",
            "test_log_px",
            "test_log_px_se",
            "minus_vae",
            "minus_vae_se",
            "eval_s",
            "paper",
        ],
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
