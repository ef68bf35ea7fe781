"""Speed of the block neural autoregressive flow (and a NAF-MAF) against flowjax's BNAF.

Same shapes for both libraries: d = ``--dim`` (8), one BNAF layer with ``--depth`` (1) hidden
layers of d x ``--block`` (8) units. Ours: ``fl.models.bnaf(d, 1, block, depth)`` (activation
tanh(h) + 0.01 h; inverse by d sequential scalar solves, 24 bisections + 8 Newton steps each).
flowjax: ``block_neural_autoregressive_flow(nn_depth=depth, nn_block_dim=block,
flow_layers=1)`` (its LeakyTanh activation and its default numerical inverter). Also ours:
``fl.models.naf(d, 1, (64, 64), 8)`` (MADE + deep sigmoidal transformer), which flowjax has no
counterpart of. Measures, each the median of ``--repeats`` calls after warm-up with
``block_until_ready``: log_prob of 10,000 rows, sample of 1,000 (through the numerical
inverses), and one adam train step on a batch of 512. Ours and flowjax's calls alternate round
by round, so a change in the machine's load hits both; ratio > 1: ours is faster.
Runs on CPU, GPU or TPU (prints the device).

Run: python benchmarks/bnaf_speed.py [--dim 8] [--block 8] [--depth 1]   (flowjax: the [bench] extra)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import flowjax_lab as fl
from _common import adam_step, device_info, flowjax_calls, load_average, print_table, write_results


def ours(flow, x, batch, n_sample):
    params = flow.init(jax.random.key(0))
    log_prob = jax.jit(flow.log_prob)
    sample = jax.jit(flow.sample, static_argnums=2)
    opt, step = adam_step(lambda p, b: -jnp.mean(flow.log_prob(p, b)))
    state = opt.init(params)
    return {
        "log_prob": lambda: log_prob(params, x),
        "sample": lambda: sample(params, jax.random.key(3), n_sample),
        "step": lambda: step(params, state, batch),
    }


def theirs(args, x, batch, n_sample):
    try:
        from flowjax.distributions import Normal
        from flowjax.flows import block_neural_autoregressive_flow
    except ImportError:
        return None
    dist = block_neural_autoregressive_flow(
        jax.random.key(1), base_dist=Normal(jnp.zeros(args.dim)), nn_depth=args.depth,
        nn_block_dim=args.block, flow_layers=1,
    )  # fmt: skip
    return flowjax_calls(dist, x, batch, n_sample)


def seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    x = jax.random.normal(jax.random.key(5), (10_000, args.dim))
    batch, n_sample = x[:512], 1000
    runs = {
        "bnaf (ours)": ours(fl.models.bnaf(args.dim, 1, args.block, args.depth), x, batch, n_sample),
        "naf-maf (ours)": ours(fl.models.naf(args.dim, 1, (64, 64), 8), x, batch, n_sample),
    }
    peer = theirs(args, x, batch, n_sample)
    if peer is not None:
        runs["bnaf (flowjax)"] = peer
    times = {name: {k: [] for k in calls} for name, calls in runs.items()}
    for calls in runs.values():  # warm-up: compile and run each twice
        for fn in calls.values():
            seconds(fn), seconds(fn)
    for _ in range(args.repeats):  # round by round, every call once
        for name, calls in runs.items():
            for k, fn in calls.items():
                times[name][k].append(seconds(fn))
    rows = []
    for name in runs:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        row = {"model": name, "log_prob rows/s": 10_000 / med["log_prob"],
               "sample rows/s": n_sample / med["sample"], "step ms": 1e3 * med["step"]}  # fmt: skip
        if peer is not None and name != "bnaf (flowjax)":
            ref = {k: statistics.median(v) for k, v in times["bnaf (flowjax)"].items()}
            row |= {f"{k} vs flowjax bnaf": ref[k] / med[k] for k in ("log_prob", "sample", "step")}
        rows.append(row)
    print_table(rows, max((list(r) for r in rows), key=len))
    print(f"wrote {write_results('bnaf_speed', rows, {'args': vars(args)})}")


if __name__ == "__main__":
    main()
