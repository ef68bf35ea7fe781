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
from typing import NamedTuple

import jax
import numpy as np
import optax

import flowjax_lab as fl
from _common import device_info, print_table, write_results
from flowjax_lab import data
from flowjax_lab.experiment.vaes import iwae_test_log_px
from flowjax_lab.objectives import mean_and_se

ROWS = {  # name: (posterior, objective)
    "vae": ("diagonal", "elbo"),
    "vae_iaf": ("iaf", "elbo"),
    "iwae_5": ("diagonal", {"iwae": 5}),
    "iwae_50": ("diagonal", {"iwae": 50}),
}
ANCHORS = {"vae": -86.76, "vae_iaf": None, "iwae_5": -85.54, "iwae_50": -84.78}
PAPER_PASSES = sum(3**i for i in range(8))  # 3,280
COLUMNS = [
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
]


class Plan(NamedTuple):
    """What every row trains on and is scored on."""

    train: np.ndarray  # training intensities (binarised afresh every step)
    steps: int
    steps_per_pass: int
    schedule: optax.Schedule
    test: np.ndarray  # the scored test images


class Keys(NamedTuple):  # the same for every row
    init: jax.Array
    fit: jax.Array
    eval: jax.Array


class Trained(NamedTuple):
    model: fl.vae.VAE
    result: fl.FitResult
    seconds: float


class Scored(NamedTuple):
    log_px: np.ndarray  # per test image, IWAE-``--eval-k``
    seconds: float


class Results(NamedTuple):
    rows: list[dict]
    path: str  # the JSON written after the last row


def paper_schedule(steps_per_pass: int) -> optax.Schedule:
    """lr 1e-3 * 10^(-i / 7) for 3^i passes, i = 0..7 (the IWAE paper's schedule)."""
    bounds, values, at = [], [1e-3], 0
    for i in range(7):
        at += 3**i * steps_per_pass
        bounds.append(at)
        values.append(1e-3 * 10 ** (-(i + 1) / 7))
    return optax.join_schedules([optax.constant_schedule(v) for v in values], bounds)


def parse_args(argv=None) -> argparse.Namespace:
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
    args = parser.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    return args


def make_plan(args, mnist: data.BinarizedData) -> Plan:
    """CPU default: ``--steps`` with a cosine decay; ``--full``: the paper's passes and schedule
    on train + validation."""
    train = np.concatenate([mnist.train, mnist.val]) if args.full else mnist.train
    steps_per_pass = math.ceil(len(train) / args.batch)
    if args.full:
        steps, schedule = PAPER_PASSES * steps_per_pass, paper_schedule(steps_per_pass)
    else:
        steps, schedule = args.steps, optax.cosine_decay_schedule(1e-3, args.steps, alpha=0.1)
    eval_n = args.eval_n or (10000 if args.full else 2000)
    return Plan(train, steps, steps_per_pass, schedule, mnist.test[:eval_n])


def print_plan(args, plan: Plan, binarization_seed: int) -> None:
    print(
        f"train {len(plan.train)} images, {plan.steps} steps of batch {args.batch} "
        f"({plan.steps / plan.steps_per_pass:.1f} passes); test log p(x) by IWAE-{args.eval_k} on "
        f"{len(plan.test)} test images (binarised with default_rng({binarization_seed}))",
        flush=True,
    )


def train_row(args, plan: Plan, name: str, keys: Keys) -> Trained:
    """Row ``name``'s VAE trained by ``fl.fit`` for ``plan.steps`` (timed, compile included)."""
    posterior, objective = ROWS[name]
    model = fl.vae.vae((784,), latent_dim=50, hidden=(200, 200), posterior=posterior)
    params = jax.jit(model.init)(keys.init)
    optimizer = optax.adam(plan.schedule, eps=1e-4)
    start = time.perf_counter()
    result = fl.fit(
        keys.fit,
        model,
        params,
        objective=objective,
        data=plan.train,
        binarize="dynamic",
        steps=plan.steps,
        batch_size=args.batch,
        optimizer=optimizer,
        steps_per_chunk=500,
        progress=False,
    )
    jax.block_until_ready(result.params)
    return Trained(model, result, time.perf_counter() - start)


def score_test(args, plan: Plan, trained: Trained, key) -> Scored:
    """Per-image test log p(x) by IWAE-``--eval-k`` (timed)."""
    start = time.perf_counter()
    log_px = iwae_test_log_px(
        trained.model,
        trained.result.params,
        plan.test,
        key,
        args.eval_k,
        args.eval_chunk,
        args.eval_batch,
    )
    return Scored(log_px, time.perf_counter() - start)


def result_row(args, plan: Plan, name: str, trained: Trained, scored: Scored, vae_log_px) -> dict:
    """The row's JSON / table entry; ``minus_vae`` is the paired difference to ``vae_log_px``
    (the ``vae`` row's per-image log p(x), when it ran before this row)."""
    posterior, objective = ROWS[name]
    result = trained.result
    mean, se = mean_and_se(scored.log_px)
    row = {
        "row": name,
        "posterior": posterior,
        "objective": objective if isinstance(objective, str) else f"iwae k={objective['iwae']}",
        "steps": int(result.step),
        "batch": args.batch,
        "epochs": round(result.step * args.batch / len(plan.train), 2),
        "train_s": round(trained.seconds, 1),
        "final_train_loss": float(np.nanmean(result.history["loss"][-500:])),
        "test_log_px": mean,
        "test_log_px_se": se,
        "eval_k": args.eval_k,
        "eval_n": len(plan.test),
        "eval_s": round(scored.seconds, 1),
        "paper": ANCHORS[name],
    }
    if vae_log_px is not None:
        row["minus_vae"], row["minus_vae_se"] = mean_and_se(scored.log_px - vae_log_px)
    return row


def run_rows(args, plan: Plan, extra: dict) -> Results:
    """Each ``--rows`` row trained and scored with the same keys; the JSON rewritten after each."""
    keys = Keys(*jax.random.split(jax.random.key(args.seed), 3))
    rows, per_image, path = [], {}, None
    for name in args.rows.split(","):
        trained = train_row(args, plan, name, keys)
        scored = score_test(args, plan, trained, keys.eval)
        per_image[name] = scored.log_px
        vae_log_px = per_image.get("vae") if name != "vae" else None
        row = result_row(args, plan, name, trained, scored, vae_log_px)
        rows.append(row)
        print(
            f"{name}: log p(x) {row['test_log_px']:.2f} +- {row['test_log_px_se']:.2f} "
            f"(train {trained.seconds:.0f} s, eval {scored.seconds:.0f} s)",
            flush=True,
        )
        path = write_results(args.out, rows, extra)
    return Results(rows, path)


def main() -> None:
    args = parse_args()
    info = device_info()
    print(
        f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}"
    )
    load_at_start = os.getloadavg()  # the machine is shared: record how busy it was
    print(f"load average at start: {load_at_start}")
    mnist = data.load_binarized_mnist()
    plan = make_plan(args, mnist)
    print_plan(args, plan, mnist.seed)
    extra = {
        "args": vars(args),
        "paper_passes": PAPER_PASSES,
        "binarization_seed": mnist.seed,
        "load_average_at_start": load_at_start,
    }
    results = run_rows(args, plan, extra)
    print()
    print_table(results.rows, COLUMNS)
    print(f"\nwrote {results.path}")


if __name__ == "__main__":
    main()
