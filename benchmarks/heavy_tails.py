"""Trainable bases on a heavy-tailed target: the 10-D Neal funnel by maximum likelihood.

Data: exact samples of the funnel (v ~ N(0, 3^2), x_i | v ~ N(0, e^v), i < 9; ``fl.targets.funnel``
gives the density), n_train for training, n_test held out. Its entropy is exact:
H = log(3 sqrt(2 pi e)) + 9 (log(2 pi e) / 2 + E[v] / 2) = log(3 sqrt(2 pi e)) + 4.5 log(2 pi e),
so held-out NLL - H is the KL(p || q) of the fitted model (>= 0, up to Monte-Carlo error; the
SE is over test rows). The table also gives the paired estimate mean(log p(x) - log q(x)) over
the same rows, KL(p || q) with far less Monte-Carlo noise (log p's heavy tails cancel). The marginals of x_i are Gaussian scale mixtures with heavy tails (their
kurtosis grows as e^(sigma^2)): a Gaussian base pushed through the Lipschitz layers of a flow
cannot reach them; a Student-t base with learned degrees of freedom can.

Rows: ``fl.models.nsf(10)`` (coupling, 8 layers, MLPs 2 x 128, 8 bins, elementwise affine) and
``fl.models.maf(10)`` (affine MADE, 5 layers, 2 x 128: the funnel's own form, x_i = e^(v/2) z_i,
is one affine autoregressive step) with ``base`` None (fixed N(0, I)), "diagonal_normal" and
"student_t", each trained by ``fl.fit`` with its defaults for ``--steps`` steps, same seed. Runs on CPU, GPU or TPU.

Run: python benchmarks/heavy_tails.py [--steps 3000]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import flowjax_lab as fl
from _common import device_info, load_average, print_table, write_results
from flowjax_lab.objectives import mean_and_se

DIM, SIGMA = 10, 3.0
ENTROPY = math.log(SIGMA * math.sqrt(2 * math.pi * math.e)) + (DIM - 1) * 0.5 * math.log(
    2 * math.pi * math.e
)


def funnel_samples(key, n: int) -> np.ndarray:
    k_v, k_x = jax.random.split(key)
    v = SIGMA * jax.random.normal(k_v, (n, 1))
    x = jnp.exp(0.5 * v) * jax.random.normal(k_x, (n, DIM - 1))
    return np.asarray(jnp.concatenate([v, x], axis=1))


MODELS = {"nsf": lambda base: fl.models.nsf(DIM, base=base),
          "maf (affine)": lambda base: fl.models.maf(DIM, 5, (128, 128), base=base)}  # fmt: skip


def row(model, base, train, test, exact_nll, args) -> dict:
    flow = MODELS[model](base)
    key = jax.random.key(args.seed)
    k_init, k_fit = jax.random.split(key)
    params = flow.init(k_init)
    start = time.perf_counter()
    result = fl.fit(k_fit, flow, params, data=train, steps=args.steps, batch_size=256,
                    progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    nll = -np.asarray(jax.jit(flow.log_prob)(result.params, jnp.asarray(test)), np.float64)
    gap, se = mean_and_se(nll - ENTROPY)
    kl, kl_se = mean_and_se(nll - exact_nll)
    out = {"model": model, "base": base or "normal (fixed)", "steps": int(result.step),
           "test NLL - H": gap, "+- SE": se, "KL(p||q) paired": kl, "+- SE ": kl_se,
           "train s": round(seconds, 1)}  # fmt: skip
    if base == "student_t":
        df = np.exp(np.asarray(result.params["base"]["log_df"]))
        out["learned df (v, x_1..9 median)"] = f"{df[0]:.1f}, {np.median(df[1:]):.1f}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=100000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = device_info()
    print(
        f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}"
    )
    print(f"load average at start: {load_average()}")
    k_train, k_test = jax.random.split(jax.random.key(1234))
    train, test = funnel_samples(k_train, args.train), funnel_samples(k_test, args.test)
    exact = -np.asarray(jax.vmap(fl.targets.funnel(DIM, SIGMA).log_prob)(jnp.asarray(test)))
    exact = exact.astype(np.float64)
    check, check_se = mean_and_se(exact - ENTROPY)
    print(f"true density on the test rows: NLL - H = {check:.3f} +- {check_se:.3f} (should be ~0)")
    bases = (None, "diagonal_normal", "student_t")
    rows = [row(m, b, train, test, exact, args) for m in MODELS for b in bases]
    columns = ["model", "base", "steps", "test NLL - H", "+- SE", "KL(p||q) paired", "+- SE ",
               "learned df (v, x_1..9 median)", "train s"]  # fmt: skip
    print(f"10-D funnel (sigma {SIGMA}), H = {ENTROPY:.4f} nats, {args.train} train / "
          f"{args.test} test rows, fl.fit defaults")  # fmt: skip
    print_table(rows, columns)
    print(f"wrote {write_results('heavy_tails', rows, {'args': vars(args), **info})}")


if __name__ == "__main__":
    main()
