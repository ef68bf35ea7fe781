"""MAF(5) on MNIST with the MAF paper's preprocessing, against the paper's table (nats, bits/pixel).

Data: ``fl.data.load_mnist_maf()`` (x = p / 256 + U[0, 1) / 256 from RandomState(42) for train,
validation, test in that order; y = logit(1e-6 + (1 - 2e-6) x)): the paper's own test set, noise
included. Model: ``fl.models.maf(784, num_layers=5, hidden=(1024,))`` on standardised y (the
paper puts batch norm between its MADEs instead; ``--norm actnorm`` is the nearest stand-in),
trained by default on fresh dequantisation noise every step (``--noise per_step``; the paper
trains on its one draw, ``--noise fixed``); ``fl.fit`` with adam (warm-up + cosine), early
stopping on the validation NLL, the best validation params evaluated on test. Log-likelihoods are
in nats in logit space (the paper's unit); bits/pixel = (-log p(y) - log|det dy/dx| + 784 log 256)
/ (784 log 2) (``fl.data.maf_bits_per_pixel``), which gives the paper's 2.01 for its Gaussian.
The paper's rows are converted to bits/pixel with this test set's mean logit log-det.

Training runs in rounds of ``--round-steps`` (each a resumed ``fl.fit`` on one checkpoint
folder, so the schedule is that of ``--steps``), until ``--steps``, early stopping or
``--minutes``. Runs unchanged on CPU, GPU or TPU (the device is printed).

Run: python benchmarks/maf_mnist.py [--steps 30000] [--minutes 60] [--batch 128] [--lr 1e-4]
     python benchmarks/maf_mnist.py --minutes 2      # smoke run
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax_lab as fl
from _common import device_info, print_table, write_results
from flowjax_lab import data as D

PAPER = [  # MAF paper, Table 2, MNIST, unconditional: mean test log-likelihood (nats)
    ("Gaussian (paper)", -1366.9),
    ("RealNVP(5) (paper)", -1323.2),
    ("MAF(5) (paper)", -1300.5),
]


def _row(name, mean, two_se, bits, **extra):
    return {
        "model": name,
        "test log-lik (nats)": mean,
        "+- 2 SE": two_se,
        "bits/pixel": bits,
        **extra,
    }


def main(args) -> None:
    info = device_info()
    print(f"device: {info['platform']} {info['device']} x{info['num_devices']}, jax {info['jax']}")
    t0 = time.perf_counter()
    m = D.load_mnist_maf()
    d = m.train.shape[1]
    logdet_test = np.asarray(D.logit_logdet(m.test, m.alpha), np.float64)
    to_bits = lambda ll: (-ll - logdet_test.mean() + d * math.log(256)) / (d * math.log(2))  # noqa: E731
    rows = [_row(n, ll, None, to_bits(ll), source="paper; bits converted") for n, ll in PAPER]

    ll_gauss = D.gaussian_mle_log_likelihood(m.train, m.test)
    rows.insert(
        1,
        _row(
            "Gaussian (ours, full-cov MLE)",
            float(ll_gauss.mean()),
            float(2 * ll_gauss.std(ddof=1) / math.sqrt(len(ll_gauss))),
            float(D.maf_bits_per_pixel(ll_gauss, m.test, m.alpha).mean()),
            source=f"measured, {time.perf_counter() - t0:.0f} s with loading",
        ),
    )

    s = fl.data.fit_standardizer(m.train)
    train, val, test = (
        np.asarray(D.standardize(s, x), np.float32) for x in (m.train, m.val, m.test)
    )
    shift = float(D.standardize_logdet(s))  # log p(y) = log p_model(standardize(y)) + shift
    hidden = tuple(int(w) for w in args.hidden.split(","))
    # actnorm after each MADE stands in for the paper's batch norm (set by data_init)
    flow = fl.models.maf(d, num_layers=5, hidden=hidden, actnorm=args.norm == "actnorm")
    params = jax.jit(lambda k, b: fl.data_init(flow, k, b))(jax.random.key(0), train[:5000])
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, min(args.warmup, args.steps - 1), args.steps, args.lr * 0.01
    )
    optimizer = optax.chain(  # the paper's L2 penalty 1e-6 |w|^2 / 2 in the loss -> 1e-6 w in grad
        optax.clip_by_global_norm(1.0),
        optax.add_decayed_weights(args.weight_decay),
        optax.adam(schedule),
    )
    if args.noise == "per_step":
        # Train on pixels x = (p + u) / 256 with u redrawn every step (fl.fit(dequantize=256)),
        # through the paper's logit and the standardisation (a trainable affine started at the
        # standardiser); validation and test use the paper's fixed-noise splits unchanged.
        px = D.load_mnist_pixels()
        std_layer = fl.transforms.affine()
        std_params = {"shift": s.mean, "log_scale": jnp.log(s.std)}
        fit_flow = fl.make_flow(
            fl.chain(fl.transforms.logit(m.alpha), std_layer, flow.transform), event_shape=(d,)
        )
        fit_params = ({}, std_params, params)
        fit_data = px.train.astype(np.float32)  # integer pixel values
        fit_val = np.asarray((1 / (1 + np.exp(-m.val)) - m.alpha) / (1 - 2 * m.alpha), np.float32)
        y_flow = fl.make_flow(fl.chain(std_layer, flow.transform), event_shape=(d,))
        test_log_prob = jax.jit(lambda p, y: y_flow.log_prob(p[1:], y))
        test_rows, test_shift, dequantize = np.asarray(m.test, np.float32), 0.0, 256
    else:
        fit_flow, fit_params, fit_data, fit_val = flow, params, train, val
        test_log_prob, test_rows, test_shift, dequantize = jax.jit(flow.log_prob), test, shift, None
    start, step, result = time.perf_counter(), 0, None
    with tempfile.TemporaryDirectory() as ckpt:
        while step < args.steps:
            stop = min(step + args.round_steps, args.steps)
            result = fl.fit(
                jax.random.key(1),
                fit_flow,
                fit_params,
                data=fit_data,
                dequantize=dequantize,
                steps=stop,
                batch_size=args.batch,
                optimizer=optimizer,
                val_data=fit_val[: args.val_rows],
                val_every=args.val_every,
                patience=args.patience,
                checkpoint_dir=ckpt,
                checkpoint_every=args.round_steps,
                keep=1,
                resume=step > 0,
                progress=False,
            )
            step = result.step
            elapsed = time.perf_counter() - start
            best_nats = (  # per_step: fit's val loss is on the pixel scale; here logit nats
                -float(np.mean(test_log_prob(result.params, np.asarray(m.val[:2000], np.float32))))
                if args.noise == "per_step"
                else result.best_val_loss - shift
            )
            print(
                f"step {step}: best val NLL {best_nats:.2f} nats at step "
                f"{result.best_step}, {elapsed / 60:.1f} min",
                flush=True,
            )
            if result.stopped_early or (args.minutes and elapsed > 60 * args.minutes):
                break
    wall = time.perf_counter() - start
    ll = (
        np.concatenate(
            [
                np.asarray(test_log_prob(result.params, test_rows[i : i + 1000]))
                for i in range(0, len(test_rows), 1000)
            ]
        ).astype(np.float64)
        + test_shift
    )
    rows.append(
        _row(
            f"MAF(5) (ours, {args.hidden} hidden, {args.norm}, noise {args.noise})",
            float(ll.mean()),
            float(2 * ll.std(ddof=1) / math.sqrt(len(ll))),
            float(D.maf_bits_per_pixel(ll, m.test, m.alpha).mean()),
            source=(
                f"measured: {step} steps (best at {result.best_step}), batch {args.batch}, "
                f"{wall / 60:.1f} min on {info['platform']}"
            ),
        )
    )
    worst = np.sort(ll)[:5]
    print(f"test log-lik: median {np.median(ll):.1f}, 5 lowest {np.round(worst, 1).tolist()}")
    if args.save_params:
        with open(args.save_params, "wb") as f:
            f.write(flax.serialization.to_bytes(result.params))
        print(f"saved params to {args.save_params}")
    digits = {"test log-lik (nats)": 1, "+- 2 SE": 1, "bits/pixel": 3}
    shown = [
        {k: f"{v:.{digits[k]}f}" if k in digits and v is not None else v for k, v in r.items()}
        for r in rows
    ]
    print_table(shown, ["model", "test log-lik (nats)", "+- 2 SE", "bits/pixel", "source"])
    path = write_results(
        "maf_mnist",
        rows,
        {
            "args": vars(args),
            "steps": step,
            "best_step": result.best_step,
            "stopped_early": result.stopped_early,
            "train_seconds": wall,
            "test_median": float(np.median(ll)),
            "test_lowest5": worst.tolist(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30000, help="step budget (sets the schedule)")
    parser.add_argument("--minutes", type=float, default=None, help="stop after a round past this")
    parser.add_argument("--batch", type=int, default=128, help="the paper's minibatch: 100")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--hidden", default="1024", help="MADE hidden widths (the paper's MNIST: 1024,1024)"
    )
    parser.add_argument(
        "--norm", choices=("actnorm", "none"), default="none",
        help="layer after each MADE: actnorm (stands in for the paper's batch norm) or none",
    )  # fmt: skip
    parser.add_argument("--weight-decay", type=float, default=1e-6, help="the paper's L2: 1e-6")
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--val-rows", type=int, default=None, help="validation rows (all: 10000)")
    parser.add_argument("--patience", type=int, default=20, help="validations without progress")
    parser.add_argument("--round-steps", type=int, default=2000, help="steps per fit round")
    parser.add_argument(
        "--noise", choices=("fixed", "per_step"), default="per_step",
        help="train on the paper's one noise draw, or redraw the dequantisation noise each step",
    )  # fmt: skip
    parser.add_argument("--save-params", default=None, help="write the best params (msgpack)")
    main(parser.parse_args())
