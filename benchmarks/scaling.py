"""Data-parallel scaling of fl.fit and sharded log_prob over 1, 2, 4, ... devices.

For each device count n (one subprocess each, since XLA_FLAGS is fixed at start-up) and each
model of MODELS: fl.fit steps/s and samples/s (rows/s) at a fixed global batch (strong scaling;
--per-device-batch for weak scaling), and log_prob samples/s on a 65,536-row batch split over
the devices. n = 1 is the plain one-device fit (no mesh); n > 1 uses mesh=make_mesh(n).
Efficiency = (rate_n / rate_1) / n for strong scaling and rate_n / rate_1 / n in rows for weak.

On a CPU the devices are forced host devices (--xla_force_host_platform_device_count=n): they
share the machine's cores, so the figures measure the overhead of the sharded program (split,
all-reduce, per-chunk host feed), not a speed-up; on a multi-GPU or TPU host the same command
uses the first n real devices (printed). fit steps/s counts the steps after the first chunk
(which holds the compile) over the wall time after it, median of --repeats runs.

Add a model to MODELS (name -> builder returning flow, params, train rows, batch) to measure it
(maf8: a dense MAF; glow: the image model).

Run: python benchmarks/scaling.py [--devices 1 2 4] [--models maf8 glow] [--steps 600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 256
EVAL_ROWS = 65_536


def _maf8():
    """The benchmark MAF: d = 8, 5 layers, MADE 2 x 128, on correlated Gaussian rows."""
    import jax

    import flowjax_lab as fl
    import flowjax_lab.data as fl_data

    flow = fl.models.maf(dim=8, num_layers=5, hidden=(128, 128))
    mean, cov = fl_data.correlated_gaussian(jax.random.key(1), 8)
    data = jax.random.multivariate_normal(jax.random.key(2), mean, cov, (10_000,))
    return flow, flow.init(jax.random.key(0)), (data - data.mean(0)) / data.std(0), BATCH


def _glow():
    """The image model: Glow on sklearn's 8x8 digits as (8, 8, 1) images, dequantised once.

    2 levels of 4 steps (actnorm, 1x1 LU conv, affine coupling with a 32-channel ConvNet),
    learned split prior; global batch 64. Small so that a CPU run takes minutes.
    """
    import jax

    import flowjax_lab as fl
    from flowjax_lab.data import images

    px = images.load_digits_images(jax.random.key(1))
    data = images.dequantize_images(jax.random.key(2), px.train, 17)
    flow = fl.models.glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=32,
                          preprocessing=None)  # as measured before the logit default  # fmt: skip
    return flow, fl.data_init(flow, jax.random.key(0), data[:256]), data, 64


MODELS = {"maf8": _maf8, "glow": _glow}


def _fit_rate(flow, params, data, batch, steps, repeats, mesh) -> float:
    """Median fl.fit steps/s after the first chunk (which holds the compile)."""
    import jax
    import numpy as np
    import optax

    import flowjax_lab as fl

    def once():
        start = time.perf_counter()
        result = fl.fit(
            jax.random.key(0),
            flow,
            params,
            data=data,
            steps=steps,
            batch_size=batch,
            optimizer=optax.adam(1e-3),
            progress=False,
            mesh=mesh,
        )
        total = time.perf_counter() - start
        clock = result.history["time"]
        first = int(np.sum(clock == clock[0]))
        return (steps - first) / (total - clock[0])

    once()  # warm-up: caches, allocator, thread pools
    return float(np.median([once() for _ in range(repeats)]))


def _log_prob_seconds(flow, params, mesh) -> float:
    """Median seconds of a jitted log_prob on EVAL_ROWS rows split over the mesh."""
    import jax
    import numpy as np

    import flowjax_lab as fl
    from _common import time_call

    x = np.asarray(jax.random.normal(jax.random.key(3), (EVAL_ROWS, *flow.event_shape)))
    rows = fl.sharding.global_rows(lambda s: x[s], mesh, EVAL_ROWS)
    lp = jax.jit(flow.log_prob, out_shardings=fl.sharding.batch_sharding(mesh))
    return time_call(lp, fl.sharding.replicate(params, mesh), rows, repeats=5, warmup=1)


def child(n: int, models: list[str], steps: int, repeats: int, per_device_batch: int | None):
    """Measure every model on n devices; prints one JSON line per model."""
    import jax

    import flowjax_lab as fl
    from _common import device_info

    if jax.device_count() < n:
        print(json.dumps({"devices": n, "skipped": f"only {jax.device_count()} devices"}))
        return
    mesh = fl.sharding.make_mesh(n)
    used = [str(d) for d in mesh.devices.flat]
    for name in models:
        try:
            flow, params, data, batch = MODELS[name]()
        except NotImplementedError as err:
            print(json.dumps({"devices": n, "model": name, "skipped": str(err)}))
            continue
        batch = batch if per_device_batch is None else per_device_batch * n
        rate = _fit_rate(flow, params, data, batch, steps, repeats, None if n == 1 else mesh)
        row = {
            "devices": n,
            "model": name,
            "used": used,
            "batch": batch,
            "fit steps/s": rate,
            "fit samples/s": rate * batch,
            "log_prob samples/s": EVAL_ROWS / _log_prob_seconds(flow, params, mesh),
            "info": device_info(),
        }
        print(json.dumps(row), flush=True)


def main(args) -> None:
    from _common import print_table  # imported here: the parent never starts jax

    rows = []
    for n in args.devices:
        env = dict(os.environ)
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        env["PYTHONPATH"] = os.pathsep.join(
            [HERE, os.path.dirname(HERE), env.get("PYTHONPATH", "")]
        )
        cmd = [sys.executable, __file__, "--child", str(n), "--steps", str(args.steps)]
        cmd += ["--repeats", str(args.repeats), "--models", *args.models]
        if args.per_device_batch:
            cmd += ["--per-device-batch", str(args.per_device_batch)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        if out.returncode:
            raise RuntimeError(f"{n} devices failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows.append(row)
                if "skipped" in row:
                    print(f"{row.get('model', '')} on {n} devices skipped: {row['skipped']}")
                else:
                    print(f"{n} devices ({row['info']['platform']}): {', '.join(row['used'])}")
    done = [r for r in rows if "skipped" not in r]
    for r in done:
        base = next(b for b in done if b["model"] == r["model"] and b["devices"] == args.devices[0])
        scale = r["devices"] / base["devices"]
        r["fit efficiency"] = r["fit samples/s"] / base["fit samples/s"] / scale
        r["log_prob efficiency"] = r["log_prob samples/s"] / base["log_prob samples/s"] / scale
    columns = ["model", "devices", "batch", "fit steps/s", "fit samples/s", "fit efficiency"]
    columns += ["log_prob samples/s", "log_prob efficiency"]
    print_table(done, columns)
    path = os.path.join(HERE, "results", "scaling.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:  # each row carries its process's device info
        extra = {"steps": args.steps, "repeats": args.repeats, "eval_rows": EVAL_ROWS}
        json.dump({"rows": rows, **extra}, f, indent=2)
    print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-device-batch", type=int, default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.models, args.steps, args.repeats, args.per_device_batch)
    else:
        main(args)
