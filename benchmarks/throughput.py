"""Throughput of log_prob, sample and one optax step for MAF, RealNVP and NSF; compile times.

Runs on CPU, GPU or TPU (prints the device). When flowjax is installed (``pip install -e
".[bench]"``) the same architectures are built there and our/their speed ratios are printed in
the same run (ratio > 1: we are faster). Ours and flowjax's calls for one measure alternate
call by call, so each of the ``--rounds`` rounds gives a ratio; the script prints the median
and the minimum over rounds, every round's ratio, and a PASS/MISS line per aim of issue 12
(each ratio: median >= 1.0 and no round < 0.9; MAF sampling >= 1.8). The load average is
printed too: on a shared machine a low round is usually someone else's job. Results: tables on
stdout and benchmarks/results/throughput.json (per-round ratios included). Usage:
``python benchmarks/throughput.py [--quick] [--rounds 5]``.

Roofline columns: the conditioners' dense-layer FLOPs per log_prob (counted from the kernels in
the params) over the time, as a fraction of this machine's float32 matmul rate, for us and for
flowjax (same architecture, same FLOPs). ``max_possible_vs_flowjax`` = 1 / flowjax's fraction is
the log_prob ratio an implementation running its matmuls at the full measured rate (and doing
nothing else) would reach: the ceiling for any log_prob ratio on this machine. The
``handwritten_*`` columns time reference.py's plain-JAX versions of the same models against
flowjax (for nsf, the conditioner floor: the NSF's MLPs with an affine transformer).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import reference

import flowjax_lab as fl
from _common import (
    adam_step,
    check_aim,
    compile_seconds,
    device_info,
    flowjax_calls,
    load_average,
    print_table,
    round_ratios,
    time_call,
    write_results,
)

DIM, WIDTH = 8, 128
MODELS = {  # name: (our builder, flowjax builder args, layers)
    "maf": lambda n: fl.models.maf(DIM, n, (WIDTH, WIDTH)),
    "realnvp": lambda n: fl.models.realnvp(DIM, n, (WIDTH, WIDTH)),
    "nsf": lambda n: fl.models.nsf(DIM, n, (WIDTH, WIDTH), 8, elementwise_affine=False),
}
LAYERS = {"maf": 5, "realnvp": 8, "nsf": 8}
REPEATS = 7  # timed calls per round; ratios are per round, the table gives their median


def matmul_flops_per_s(n: int = 2048) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    t = time_call(jax.jit(jnp.dot), a, a, repeats=5)
    return 2 * n**3 / t



def conditioner_flops(params) -> int:
    """Dense-layer FLOPs per sample of one log_prob pass: 2 * fan_in * fan_out for every kernel.

    The conditioners' matmuls are almost all of the arithmetic of these flows, so FLOPs / time /
    matmul rate bounds how fast ANY implementation of the same architecture can be."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(
        2 * leaf.size
        for path, leaf in flat
        if "kernel" in jax.tree_util.keystr(path) and jnp.issubdtype(leaf.dtype, jnp.floating)
    )


def ours(name: str, x: jax.Array, step_batch: jax.Array, n_sample: int) -> dict:
    flow = MODELS[name](LAYERS[name])
    params = flow.init(jax.random.key(1))
    params = fl.testing.randomize_params(jax.random.key(2), params, 0.01)  # not the identity
    log_prob = jax.jit(flow.log_prob)
    sample = jax.jit(flow.sample, static_argnums=2)
    opt, step = adam_step(fl.forward_kl(flow))
    state = opt.init(params)
    calls = {
        "log_prob": lambda: log_prob(params, x),
        "sample": lambda: sample(params, jax.random.key(3), n_sample),
        "step": lambda: step(params, state, step_batch),
    }
    return calls, conditioner_flops(params)


def theirs(name: str, x: jax.Array, step_batch: jax.Array, n_sample: int) -> dict | None:
    try:
        from flowjax.bijections import RationalQuadraticSpline
        from flowjax.distributions import Normal
        from flowjax.flows import coupling_flow, masked_autoregressive_flow
    except ImportError:
        return None
    key, base = jax.random.key(1), Normal(jnp.zeros(DIM))
    common = dict(base_dist=base, nn_width=WIDTH, nn_depth=2, flow_layers=LAYERS[name])
    if name == "maf":
        dist = masked_autoregressive_flow(key, **common)
    elif name == "realnvp":
        dist = coupling_flow(key, **common)
    else:
        dist = coupling_flow(
            key, transformer=RationalQuadraticSpline(knots=8, interval=4), **common
        )
    return flowjax_calls(dist, x, step_batch, n_sample)


def handwritten(name: str, x: jax.Array, step_batch: jax.Array) -> dict:
    """log_prob and step of reference.py's plain-JAX version (for nsf: the conditioner floor)."""
    key = jax.random.key(1)
    if name == "maf":
        params, log_prob = reference.maf(key, DIM, WIDTH, LAYERS[name])
    else:
        per_dim = 3 * 8 - 1 if name == "nsf" else 2
        params, log_prob = reference.coupling(key, DIM, WIDTH, LAYERS[name], per_dim)
    opt, step = adam_step(lambda p, b: -jnp.mean(log_prob(p, b)))
    state = opt.init(params)
    log_prob = jax.jit(log_prob)
    return {
        "hand_log_prob": lambda: log_prob(params, x),
        "hand_step": lambda: step(params, state, step_batch),
    }


def time_interleaved(calls: dict, rounds: int) -> dict:
    """Per-round median seconds per call. Calls measuring the same thing (``log_prob``,
    ``flowjax_log_prob``, ``hand_log_prob``) form a group; in each of ``rounds`` rounds every
    group's calls run one after another, ``REPEATS`` times over (after a warm-up of each), so a
    change in the machine's load hits ours and flowjax's alike and each round gives a ratio."""
    groups = {}
    for k in calls:
        groups.setdefault(k.removeprefix("flowjax_").removeprefix("hand_"), []).append(k)
    times = {k: [] for k in calls}
    for fn in calls.values():
        time_call(fn, repeats=1)
    for _ in range(rounds):
        for keys in groups.values():
            per_call = {k: [] for k in keys}
            for _ in range(REPEATS):
                for k in keys:
                    start = time.perf_counter()
                    jax.block_until_ready(calls[k]())
                    per_call[k].append(time.perf_counter() - start)
            for k in keys:
                times[k].append(statistics.median(per_call[k]))
    return times


def aims(rows: list[dict]) -> list[str]:
    """PASS/MISS lines for the issue's aims: every ratio level with flowjax (median over rounds
    >= 1.0, no round < 0.9), MAF sampling >= 1.8x."""
    lines = []
    for row in rows:
        for what in ("log_prob", "sample", "step"):
            if f"{what}_vs_flowjax" not in row:
                continue
            key = f"{what}_vs_flowjax"
            r = {"median": row[key], "min": row[f"{key}_min"], "rounds": row[f"{key}_rounds"]}
            lines.append(check_aim(f"{row['model']} {what} vs flowjax", r, 1.0, 0.9)[0])
            if row["model"] == "maf" and what == "sample":
                lines.append(check_aim("maf sample vs flowjax", r, 1.8)[0])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller batch, for a smoke run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    batch = 1000 if args.quick else 10_000
    info = device_info()
    print("device:", info)
    load_start = load_average()
    print("load average (1/5/15 min) at the start:", load_start)
    x = jax.random.normal(jax.random.key(0), (batch, DIM))
    step_batch = x[:512]
    peak = matmul_flops_per_s()
    print(f"float32 matmul rate: {peak / 1e9:.1f} GFLOP/s")
    rows = []
    for name in MODELS:
        calls, flops = ours(name, x, step_batch, batch)
        peer = theirs(name, x, step_batch, batch)
        calls.update({f"flowjax_{k}": fn for k, fn in (peer or {}).items()})
        calls.update(handwritten(name, x, step_batch))
        rounds = time_interleaved(calls, args.rounds)
        t = {k: statistics.median(v) for k, v in rounds.items()}
        row = {"model": name, "layers": LAYERS[name], "batch": batch}
        for what in ("log_prob", "sample", "step"):
            n = 512 if what == "step" else batch
            row[f"{what}_per_s"] = n / t[what]
            if peer is not None:
                ratio = round_ratios(rounds[f"flowjax_{what}"], rounds[what])
                row[f"{what}_vs_flowjax"] = ratio["median"]
                row[f"{what}_vs_flowjax_min"] = ratio["min"]
                row[f"{what}_vs_flowjax_rounds"] = ratio["rounds"]
        if name == "maf":  # the formula, as a check on the count from the params
            assert flops == LAYERS[name] * 2 * (DIM * WIDTH + WIDTH**2 + WIDTH * 2 * DIM)
        row["log_prob_roofline"] = batch * flops / t["log_prob"] / peak
        if peer is not None:  # same architecture, same FLOPs
            row["flowjax_roofline"] = batch * flops / t["flowjax_log_prob"] / peak
            row["max_possible_vs_flowjax"] = 1.0 / row["flowjax_roofline"]
            for what in ("log_prob", "step"):
                row[f"handwritten_{what}_vs_flowjax"] = t[f"flowjax_{what}"] / t[f"hand_{what}"]
        rows.append(row)
    compile_rows = []
    for layers in (5, 20):
        flow = fl.models.maf(DIM, layers, (WIDTH, WIDTH))
        params = flow.init(jax.random.key(0))
        compile_rows.append(
            {
                "model": "maf",
                "layers": layers,
                "compile_log_prob_s": compile_seconds(flow.log_prob, params, x),
                "compile_grad_s": compile_seconds(
                    jax.grad(fl.forward_kl(flow)), params, step_batch
                ),
                "compile_sample_s": compile_seconds(
                    lambda p, k, flow=flow: flow.sample(p, k, x.shape[0]), params, jax.random.key(1)
                ),
            }
        )
    cols = [
        "model",
        "layers",
        "log_prob_per_s",
        "log_prob_vs_flowjax",
        "sample_per_s",
        "sample_vs_flowjax",
        "step_per_s",
        "step_vs_flowjax",
    ]
    print_table(rows, cols)
    print("\nratio vs flowjax per round (theirs' time / ours in the same round):")
    per_round = [
        {
            "model": r["model"],
            "measure": what,
            "median": r[f"{what}_vs_flowjax"],
            "min": r[f"{what}_vs_flowjax_min"],
            "rounds": " ".join(f"{v:.2f}" for v in r[f"{what}_vs_flowjax_rounds"]),
        }
        for r in rows
        for what in ("log_prob", "sample", "step")
        if f"{what}_vs_flowjax" in r
    ]
    if per_round:
        print_table(per_round, ["model", "measure", "median", "min", "rounds"])
    lines = aims(rows)
    print(*lines, sep="\n")
    print("load average (1/5/15 min) at the end:", load_average())
    print("\nbounds: matmul roofline fractions, and plain-JAX versions (reference.py) vs flowjax")
    bounds = [
        "model",
        "log_prob_roofline",
        "flowjax_roofline",
        "max_possible_vs_flowjax",
        "handwritten_log_prob_vs_flowjax",
        "handwritten_step_vs_flowjax",
    ]
    print_table(rows, bounds)
    print_table(
        compile_rows,
        ["model", "layers", "compile_log_prob_s", "compile_grad_s", "compile_sample_s"],
    )
    extra = {"compile": compile_rows, "matmul_flops": peak, "rounds": args.rounds}
    extra.update(aims=lines, load_average=load_average(), load_average_start=load_start)
    path = write_results("throughput", rows, extra)
    print("wrote", path)


if __name__ == "__main__":
    main()
