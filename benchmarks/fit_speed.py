"""Training throughput (steps/s) of fl.fit against a Python loop, a bare lax.scan and flowjax.

Models: a small MAF (dim 2, 5 layers, MADE 2x32) and the benchmark MAF (dim 8, 5 layers, 2x128),
batch 256, MLE. fl.fit runs with validation (every 100 steps), a progress bar and checkpoints
(every 1000 steps: at 1000 and at the end, the final write waited for) switched on; "fl.fit
bare" has all three off. Its steps/s counts the steps after its first chunk (which holds its
one compile) over the wall time after that chunk, so validation, progress, checkpoint and
data reshuffling costs are all included. The Python loop and the bare scan run the same loss
and optax adam on consecutive slices of the iid data (no reshuffling, no validation) after a
warm-up compile; flowjax's fit_to_data trains the same architecture
(masked_autoregressive_flow, affine, reverse permutations) after a warm-up epoch. After one
warm-up run of each, the methods run in turn ``--repeats`` times (interleaved, so drift in the
machine's speed hits all alike) and the table gives the median steps/s. fl.fit and flowjax run
back to back in each repeat; their per-repeat ratios, median and minimum are printed with a
PASS/MISS line for issue 12's aims (>= 5x on the small model, >= 2x on d=8), and the load
average (the machine may be shared).

Run: python benchmarks/fit_speed.py [--steps 2000] [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flowjax_lab as fl
import flowjax_lab.data as fl_data
from _common import (
    check_aim,
    device_info,
    load_average,
    print_table,
    round_ratios,
    write_results,
)

BATCH = 256
AIMS = {2: 5.0, 8: 2.0}  # issue 12: fl.fit (all on) / fit_to_data steps/s, median over repeats


def build_model(dim: int, hidden: tuple[int, ...]):
    """fl.models.maf if present, else a stack of fl.transforms.maf layers, else linear layers."""
    try:
        from flowjax_lab import models

        return models.maf(dim=dim, num_layers=5, hidden=hidden), "fl.models.maf"
    except (ImportError, AttributeError):
        pass
    T = fl.transforms
    if hasattr(T, "maf"):
        step = fl.chain(T.maf(hidden=hidden), T.reverse_permutation())
        return fl.make_flow(fl.stack(step, 5), event_shape=(dim,)), "stack(maf, reverse)"
    step = fl.chain(T.lu_linear(), T.affine())
    return fl.make_flow(fl.stack(step, 5), event_shape=(dim,)), "linear stand-in (no MAF yet)"


def make_update(flow, fixed, optimizer, data):
    """The bare step: batches are consecutive slices of the (once-shuffled) data."""
    loss = fl.forward_kl(flow)
    per_epoch = data.shape[0] // BATCH

    def update(tr, opt_state, s):
        batch = jax.lax.dynamic_slice_in_dim(data, (s % per_epoch) * BATCH, BATCH)
        value, grads = jax.value_and_grad(lambda t: loss(fl.combine(t, fixed), batch))(tr)
        updates, opt_state = optimizer.update(grads, opt_state, tr)
        return optax.apply_updates(tr, updates), opt_state, value

    return update


def _timed(run, steps):
    def once():
        start = time.perf_counter()
        jax.block_until_ready(run())
        return steps / (time.perf_counter() - start)

    once()  # warm-up (compile)
    return once


def python_loop(flow, params, data, steps):
    """A runner: one call trains ``steps`` steps and returns steps/s (compiled already)."""
    tr, fixed = fl.partition(params)
    opt = optax.adam(1e-3)
    step = jax.jit(make_update(flow, fixed, opt, data))

    def run(tr=tr):
        opt_state = opt.init(tr)
        for s in range(steps):
            tr, opt_state, value = step(tr, opt_state, s)
        return tr, value

    return _timed(run, steps)


def bare_scan(flow, params, data, steps):
    """A runner, as python_loop, for the same steps inside one jitted lax.scan."""
    tr, fixed = fl.partition(params)
    opt = optax.adam(1e-3)
    update = make_update(flow, fixed, opt, data)

    @jax.jit
    def run(tr, opt_state):
        def body(carry, s):
            tr, opt_state, value = update(*carry, s)
            return (tr, opt_state), value

        return jax.lax.scan(body, (tr, opt_state), jnp.arange(steps))

    return _timed(lambda: run(tr, opt.init(tr)), steps)


def fl_fit(flow, params, data, val, steps, extras=True):
    """Steps/s after the first chunk (which holds the compile), from the history's clock."""
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(val_data=val, val_every=100, checkpoint_dir=tmp, checkpoint_every=1000)
        start = time.perf_counter()
        result = fl.fit(
            jax.random.key(0),
            flow,
            params,
            data=data,
            steps=steps,
            batch_size=BATCH,
            optimizer=optax.adam(1e-3),
            progress=extras,
            steps_per_chunk=100,
            **(kw if extras else {}),
        )
        total = time.perf_counter() - start
    clock = result.history["time"]
    first = int(np.sum(clock == clock[0]))  # steps in the first chunk
    return (steps - first) / (total - clock[0]), total


def flowjax_fit(dim, width, data, steps):
    """A runner for flowjax's fit_to_data on the same architecture, or None without flowjax."""
    try:
        import flowjax.distributions as fd
        from flowjax.flows import masked_autoregressive_flow
        from flowjax.train import fit_to_data
    except ImportError:
        return None
    flow = masked_autoregressive_flow(
        jax.random.key(0),
        base_dist=fd.Normal(jnp.zeros(dim)),
        flow_layers=5,
        nn_width=width,
        nn_depth=2,
    )
    n_train = int(data.shape[0] * 0.9)
    per_epoch = n_train // BATCH
    epochs = max(1, round(steps / per_epoch))
    kw = dict(batch_size=BATCH, learning_rate=1e-3, max_patience=10**9, show_progress=False)
    fit_to_data(jax.random.key(1), flow, data, max_epochs=1, **kw)  # warm-up (compile)

    def once():
        start = time.perf_counter()
        out, _ = fit_to_data(jax.random.key(1), flow, data, max_epochs=epochs, **kw)
        jax.block_until_ready(jax.tree.leaves(out))
        return epochs * per_epoch / (time.perf_counter() - start)

    return once


def main(steps: int, quick: bool, repeats: int) -> None:
    print("device:", device_info())
    configs = [("small MAF", 2, (32, 32)), ("benchmark MAF", 8, (128, 128))]
    if quick:
        configs = configs[:1]
    load_start = load_average()
    print("load average (1/5/15 min) at the start:", load_start)
    rows, ratio_rows, lines = [], [], []
    for name, dim, hidden in configs:
        flow, model = build_model(dim, hidden)
        params = flow.init(jax.random.key(0))
        if dim == 2:
            data = fl_data.two_moons(jax.random.key(1), 11_000)
        else:
            mean, cov = fl_data.correlated_gaussian(jax.random.key(1), dim)
            data = jax.random.multivariate_normal(jax.random.key(2), mean, cov, (11_000,))
        data = (data - data.mean(0)) / data.std(0)
        train, val = data[:10_000], data[10_000:]
        runners = {"fit": functools.partial(fl_fit, flow, params, train, val, steps)}
        fj = flowjax_fit(dim, hidden[0], np.asarray(train), steps)
        if fj is not None:  # right after fl.fit, so each repeat gives a fair ratio
            runners["flowjax"] = fj
        runners["plain"] = functools.partial(fl_fit, flow, params, train, val, steps, extras=False)
        runners["scan"] = bare_scan(flow, params, train, steps)
        runners["loop"] = python_loop(flow, params, train, steps)
        runners["fit"](), runners["plain"]()  # warm-up: caches, allocator, thread pools
        rates = {k: [] for k in runners}
        firsts = []
        for _ in range(repeats):  # interleaved, so slow drift hits every method alike
            for k, run in runners.items():
                out = run()
                if k == "fit":
                    out, first = out
                    firsts.append(first)
                elif k == "plain":
                    out = out[0]
                rates[k].append(out)
        med = {k: float(np.median(v)) for k, v in rates.items()}
        fit_rate, scan_rate, fj_rate = med["fit"], med["scan"], med.get("flowjax")
        fit_first, plain_rate, loop_rate = float(np.median(firsts)), med["plain"], med["loop"]
        model_name = f"{name} (d={dim}, 5x{hidden})"
        ratio = None
        if fj_rate is not None:
            ratio = round_ratios(rates["fit"], rates["flowjax"])
            ratio_rows.append({"model": model_name, **ratio, "aim": AIMS[dim]})
            lines.append(check_aim(f"{model_name} fl.fit vs flowjax", ratio, AIMS[dim])[0])
        rows.append(
            {
                "model": model_name,
                "built_with": model,
                "fl.fit steps/s": fit_rate,
                "fl.fit first call s": fit_first,
                "fl.fit bare steps/s": plain_rate,
                "bare scan steps/s": scan_rate,
                "python loop steps/s": loop_rate,
                "flowjax steps/s": fj_rate,
                "fit / scan": fit_rate / scan_rate,
                "fit / flowjax": None if ratio is None else ratio["median"],
            }
        )
        print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, list(rows[0]))
    if ratio_rows:
        print("\nfl.fit (all on) / flowjax fit_to_data, steps/s, per repeat:")
        shown = [{**r, "rounds": " ".join(f"{v:.2f}" for v in r["rounds"])} for r in ratio_rows]
        print_table(shown, ["model", "median", "min", "rounds", "aim"])
    print(*lines, sep="\n")
    print("load average (1/5/15 min) at the end:", load_average())
    extra = {"steps": steps, "batch": BATCH, "repeats": repeats, "fit_vs_flowjax": ratio_rows}
    extra.update(aims=lines, load_average=load_average(), load_average_start=load_start)
    print("wrote", write_results("fit_speed", rows, extra))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="small model only")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method (median)")
    args = parser.parse_args()
    main(args.steps, args.quick, args.repeats)
