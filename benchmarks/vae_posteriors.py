"""VAE posteriors on binarised 8x8 digits: diagonal Gaussian, IAF and Sylvester (orthogonal,
householder, triangular) at equal training steps and equal flow steps.

Model: ``fl.vae.vae((64,), latent_dim=--latent, hidden=(--hidden,))``, Bernoulli likelihood,
N(0, I) prior; the posteriors (all conditioned on an encoder context h of d features):

  diagonal                z = mu + sigma eps
  iaf                     --flow-steps IAF steps (MADE of one --hidden layer)
  sylvester_orthogonal    --flow-steps Sylvester steps, Q by QR, M = --num-vectors (default d)
  sylvester_householder   Q from M Householder reflections
  sylvester_triangular    Q = identity, a reverse permutation between steps

Data: sklearn's 1,797 digits (intensities / 16): the first 1,500 for training, binarised afresh
at every step (``binarize="dynamic"``); the last 297 binarised once with
``numpy.random.default_rng(0)`` for testing. Every row trains ``--steps`` ELBO steps of batch
``--batch`` with adam (lr 3e-3, cosine decay to 3e-4), the same keys.

Metrics on the test images: the ELBO (``--elbo-k`` samples per image, averaged) and log p(x) by
IWAE-``--eval-k`` (``fl.vae.iwae_log_likelihood``), each with its standard error over images,
and the paired difference of log p(x) to the diagonal row (same images and keys; its s.e. is
much smaller than the rows').

Run: python benchmarks/vae_posteriors.py [--steps 3000] [--rows diagonal,...]
Results: a table on stdout and benchmarks/results/vae_posteriors.json.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
import optax
import sklearn.datasets

import flowjax_lab as fl
from _common import device_info, print_table, write_results
from flowjax_lab.experiment.vaes import iwae_test_log_px
from flowjax_lab.objectives import mean_and_se

ROWS = {  # name: vae() posterior arguments
    "diagonal": {"posterior": "diagonal"},
    "iaf": {"posterior": "iaf"},
    "sylvester_orthogonal": {"posterior": "sylvester", "sylvester_kind": "orthogonal"},
    "sylvester_householder": {"posterior": "sylvester", "sylvester_kind": "householder"},
    "sylvester_triangular": {"posterior": "sylvester", "sylvester_kind": "triangular"},
}
COLUMNS = ["row", "params", "train_s", "test_elbo", "test_elbo_se", "test_log_px",
           "test_log_px_se", "minus_diagonal", "minus_diagonal_se"]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per row")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--latent", type=int, default=8, help="latent size d")
    parser.add_argument("--hidden", type=int, default=128, help="encoder / decoder MLP width")
    parser.add_argument("--flow-steps", type=int, default=4, help="IAF / Sylvester steps")
    parser.add_argument("--num-vectors", type=int, default=None, help="Sylvester M (default d)")
    parser.add_argument("--elbo-k", type=int, default=100, help="ELBO samples per test image")
    parser.add_argument("--eval-k", type=int, default=1000, help="IWAE samples per test image")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {list(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="vae_posteriors", help="results/<out>.json")
    args = parser.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    return args


def load_digits():
    """(train intensities (1500, 64), test binarised (297, 64)), float32."""
    pixels = sklearn.datasets.load_digits().data.astype(np.float32) / 16.0
    test = (np.random.default_rng(0).uniform(size=pixels[1500:].shape) < pixels[1500:])
    return pixels[:1500], test.astype(np.float32)


def make_model(args, name: str) -> fl.vae.VAE:
    kwargs = dict(ROWS[name])
    if kwargs["posterior"] == "iaf":
        kwargs.update(iaf_steps=args.flow_steps, iaf_hidden=(args.hidden,))
    elif kwargs["posterior"] == "sylvester":
        kwargs.update(sylvester_steps=args.flow_steps, num_vectors=args.num_vectors)
    return fl.vae.vae(
        (64,), latent_dim=args.latent, hidden=(args.hidden,), context_dim=args.latent, **kwargs
    )


def run_row(args, name, train, test, keys) -> tuple[dict, np.ndarray]:
    model = make_model(args, name)
    params = jax.jit(model.init)(keys[0])
    schedule = optax.cosine_decay_schedule(3e-3, args.steps, alpha=0.1)
    start = time.perf_counter()
    result = fl.fit(
        keys[1], model, params, objective="elbo", data=train, binarize="dynamic",
        steps=args.steps, batch_size=args.batch, optimizer=optax.adam(schedule), progress=False,
    )  # fmt: skip
    jax.block_until_ready(result.params)
    train_s = time.perf_counter() - start
    elbo = jax.jit(lambda p, x: model.elbo(p, x, keys[2], args.elbo_k))(result.params, test)
    log_px = iwae_test_log_px(model, result.params, test, keys[3], args.eval_k, 250, 8)
    elbo_mean, elbo_se = mean_and_se(np.asarray(elbo))
    px_mean, px_se = mean_and_se(log_px)
    row = {
        "row": name,
        "params": int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
        "steps": args.steps,
        "train_s": round(train_s, 1),
        "final_train_loss": float(np.nanmean(result.history["loss"][-100:])),
        "test_elbo": elbo_mean,
        "test_elbo_se": elbo_se,
        "test_log_px": px_mean,
        "test_log_px_se": px_se,
    }
    return row, log_px


def main() -> None:
    args = parse_args()
    info = device_info()
    print(f"device: {info['platform']} x{info['num_devices']}, jax {info['jax']}; "
          f"load average {os.getloadavg()}")  # fmt: skip
    train, test = load_digits()
    keys = jax.random.split(jax.random.key(args.seed), 4)
    rows, per_image = [], {}
    for name in args.rows.split(","):
        row, log_px = run_row(args, name, train, test, keys)
        per_image[name] = log_px
        if name != "diagonal" and "diagonal" in per_image:
            diff = log_px - per_image["diagonal"]
            row["minus_diagonal"], row["minus_diagonal_se"] = mean_and_se(diff)
        rows.append(row)
        print(f"{name}: ELBO {row['test_elbo']:.3f}, log p(x) {row['test_log_px']:.3f} "
              f"(train {row['train_s']:.0f} s)", flush=True)  # fmt: skip
        path = write_results(args.out, rows, {"args": vars(args)})
    print()
    print_table(rows, COLUMNS)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
