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
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax_lab as fl
from _common import device_info, print_table, write_results
from flowjax_lab import data as D
from flowjax_lab.experiment.evaluation import chunked
from flowjax_lab.objectives import mean_and_se

PAPER = [  # MAF paper, Table 2, MNIST, unconditional: mean test log-likelihood (nats)
    ("Gaussian (paper)", -1366.9),
    ("RealNVP(5) (paper)", -1323.2),
    ("MAF(5) (paper)", -1300.5),
]
TEST_CHUNK = 1000  # test rows per log-likelihood call
COLUMNS = ["model", "test log-lik (nats)", "+- 2 SE", "bits/pixel", "source"]
DIGITS = {"test log-lik (nats)": 1, "+- 2 SE": 1, "bits/pixel": 3}


class Setup(NamedTuple):
    """What ``fl.fit`` trains on and how its params are scored in logit nats."""

    flow: fl.Flow  # the flow fit trains
    params: Any  # its initial params
    data: np.ndarray  # training rows
    val: np.ndarray  # validation rows, in the units of ``data``
    dequantize: int | None  # fit(dequantize=...): 256 to redraw the pixel noise every step
    test_log_prob: Callable  # (params, rows of test_rows) -> log p per row, before test_shift
    test_rows: np.ndarray
    test_shift: float  # log p(y) = test_log_prob + test_shift (nats in logit space)
    val_nats: Callable  # FitResult -> best validation NLL in logit nats


class Training(NamedTuple):
    result: fl.FitResult  # of the last round
    step: int  # steps done
    seconds: float  # wall time of all rounds


def _row(name, mean, two_se, bits, **extra):
    return {
        "model": name,
        "test log-lik (nats)": mean,
        "+- 2 SE": two_se,
        "bits/pixel": bits,
        **extra,
    }


def reference_rows(m: D.MnistMaf, t0: float) -> list[dict]:
    """The paper's rows (bits/pixel by this test set's mean logit log-det) and our Gaussian MLE
    (``t0``: when loading started)."""
    d = m.train.shape[1]
    logdet_test = np.asarray(D.logit_logdet(m.test, m.alpha), np.float64)
    to_bits = lambda ll: (-ll - logdet_test.mean() + d * math.log(256)) / (d * math.log(2))
    rows = [_row(n, ll, None, to_bits(ll), source="paper; bits converted") for n, ll in PAPER]
    ll_gauss = D.gaussian_mle_log_likelihood(m.train, m.test)
    mean, se = mean_and_se(ll_gauss)
    gauss = _row(
        "Gaussian (ours, full-cov MLE)",
        mean,
        2 * se,
        float(D.maf_bits_per_pixel(ll_gauss, m.test, m.alpha).mean()),
        source=f"measured, {time.perf_counter() - t0:.0f} s with loading",
    )
    return rows[:1] + [gauss] + rows[1:]


def build_setup(args, m: D.MnistMaf) -> Setup:
    """MAF(5) on standardised y, initialised by ``data_init``, and what it trains on."""
    s = D.fit_standardizer(m.train)
    train = np.asarray(D.standardize(s, m.train), np.float32)
    d, hidden = train.shape[1], tuple(int(w) for w in args.hidden.split(","))
    # actnorm after each MADE stands in for the paper's batch norm (set by data_init)
    flow = fl.models.maf(d, num_layers=5, hidden=hidden, actnorm=args.norm == "actnorm")
    params = jax.jit(lambda k, b: fl.data_init(flow, k, b))(jax.random.key(0), train[:5000])
    if args.noise == "per_step":
        return _per_step_setup(m, s, flow, params)
    return _fixed_noise_setup(m, s, flow, params, train)


def _fixed_noise_setup(m: D.MnistMaf, s, flow, params, train) -> Setup:
    """Train on the paper's one noise draw, standardised."""
    val, test = (np.asarray(D.standardize(s, x), np.float32) for x in (m.val, m.test))
    shift = float(D.standardize_logdet(s))  # log p(y) = log p_model(standardize(y)) + shift
    val_nats = lambda result: result.best_val_loss - shift
    return Setup(flow, params, train, val, None, jax.jit(flow.log_prob), test, shift, val_nats)


def _per_step_setup(m: D.MnistMaf, s, flow, params) -> Setup:
    """Train on pixels x = (p + u) / 256 with u redrawn every step (fl.fit(dequantize=256)),
    through the paper's logit and the standardisation (a trainable affine started at the
    standardiser); validation and test use the paper's fixed-noise splits unchanged."""
    d = m.train.shape[1]
    std_layer = fl.transforms.affine()
    std_params = {"shift": s.mean, "log_scale": jnp.log(s.std)}
    fit_flow = fl.make_flow(
        fl.chain(fl.transforms.logit(m.alpha), std_layer, flow.transform), event_shape=(d,)
    )
    val = np.asarray((1 / (1 + np.exp(-m.val)) - m.alpha) / (1 - 2 * m.alpha), np.float32)
    y_flow = fl.make_flow(fl.chain(std_layer, flow.transform), event_shape=(d,))
    test_log_prob = jax.jit(lambda p, y: y_flow.log_prob(p[1:], y))
    val_y = np.asarray(m.val[:2000], np.float32)
    return Setup(
        fit_flow,
        ({}, std_params, params),
        D.load_mnist_pixels().train.astype(np.float32),  # integer pixel values
        val,
        256,
        test_log_prob,
        np.asarray(m.test, np.float32),
        0.0,
        # fit's validation loss is on the pixel scale; this is in logit nats
        val_nats=lambda result: -float(np.mean(test_log_prob(result.params, val_y))),
    )


def make_optimizer(args) -> optax.GradientTransformation:
    """adam with warm-up + cosine decay to lr / 100 over ``--steps``, after clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, min(args.warmup, args.steps - 1), args.steps, args.lr * 0.01
    )
    return optax.chain(  # the paper's L2 penalty 1e-6 |w|^2 / 2 in the loss -> 1e-6 w in grad
        optax.clip_by_global_norm(1.0),
        optax.add_decayed_weights(args.weight_decay),
        optax.adam(schedule),
    )


def train_in_rounds(args, setup: Setup, optimizer) -> Training:
    """Resumed ``fl.fit`` rounds of ``--round-steps`` on one checkpoint folder until ``--steps``,
    early stopping or ``--minutes``; prints the best validation NLL after each round."""
    start, step, result = time.perf_counter(), 0, None
    with tempfile.TemporaryDirectory() as ckpt:
        while step < args.steps:
            result = _fit_round(args, setup, optimizer, ckpt, step)
            step = result.step
            elapsed = time.perf_counter() - start
            print(
                f"step {step}: best val NLL {setup.val_nats(result):.2f} nats at step "
                f"{result.best_step}, {elapsed / 60:.1f} min",
                flush=True,
            )
            if result.stopped_early or (args.minutes and elapsed > 60 * args.minutes):
                break
    return Training(result, step, time.perf_counter() - start)


def _fit_round(args, setup: Setup, optimizer, ckpt: str, step: int) -> fl.FitResult:
    """One ``fl.fit`` round from ``step`` (resumed from ``ckpt`` after the first)."""
    return fl.fit(
        jax.random.key(1),
        setup.flow,
        setup.params,
        data=setup.data,
        dequantize=setup.dequantize,
        steps=min(step + args.round_steps, args.steps),
        batch_size=args.batch,
        optimizer=optimizer,
        val_data=setup.val[: args.val_rows],
        val_every=args.val_every,
        patience=args.patience,
        checkpoint_dir=ckpt,
        checkpoint_every=args.round_steps,
        keep=1,
        resume=step > 0,
        progress=False,
    )


def score_test(setup: Setup, params) -> np.ndarray:
    """Per-row test log-likelihoods in logit nats (float64)."""
    ll = chunked(setup.test_log_prob, params, setup.test_rows, TEST_CHUNK)
    return ll.astype(np.float64) + setup.test_shift


def maf_row(args, m: D.MnistMaf, ll: np.ndarray, training: Training, platform: str) -> dict:
    mean, se = mean_and_se(ll)
    return _row(
        f"MAF(5) (ours, {args.hidden} hidden, {args.norm}, noise {args.noise})",
        mean,
        2 * se,
        float(D.maf_bits_per_pixel(ll, m.test, m.alpha).mean()),
        source=(
            f"measured: {training.step} steps (best at {training.result.best_step}), "
            f"batch {args.batch}, {training.seconds / 60:.1f} min on {platform}"
        ),
    )


def report(args, rows: list[dict], ll: np.ndarray, training: Training) -> None:
    """The test log-likelihood's tail, the saved params (``--save-params``), the table, JSON."""
    result, worst = training.result, np.sort(ll)[:5]
    print(f"test log-lik: median {np.median(ll):.1f}, 5 lowest {np.round(worst, 1).tolist()}")
    if args.save_params:
        with open(args.save_params, "wb") as f:
            f.write(flax.serialization.to_bytes(result.params))
        print(f"saved params to {args.save_params}")
    shown = [
        {k: f"{v:.{DIGITS[k]}f}" if k in DIGITS and v is not None else v for k, v in r.items()}
        for r in rows
    ]
    print_table(shown, COLUMNS)
    extra = {
        "args": vars(args),
        "steps": training.step,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "train_seconds": training.seconds,
        "test_median": float(np.median(ll)),
        "test_lowest5": worst.tolist(),
    }
    print(f"wrote {write_results('maf_mnist', rows, extra)}")


def main(args) -> None:
    info = device_info()
    print(f"device: {info['platform']} {info['device']} x{info['num_devices']}, jax {info['jax']}")
    t0 = time.perf_counter()
    m = D.load_mnist_maf()
    rows = reference_rows(m, t0)
    setup = build_setup(args, m)
    training = train_in_rounds(args, setup, make_optimizer(args))
    ll = score_test(setup, training.result.params)
    rows.append(maf_row(args, m, ll, training, info["platform"]))
    report(args, rows, ll, training)


def parse_args(argv=None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
