"""Numerical-inverse accuracy and cost: max |f(g(z)) - z| over 10^5 points, float32 and float64.

For each monotone map, g = ``fl.transforms.solve_monotone`` (default options: bracket [-1, 1]
widened as needed, 24 bisection + 8 Newton steps) inverts f at 10^5 targets z ~ N(0, 3^2), with
raw params drawn at the size training reaches (N(0, s^2) per element, s below). Columns:
max |f(g(z)) - z|, the same relative to 1 + |z|, the fraction flagged converged, for the spline
the max |g(z) - g_exact(z)| against its closed-form inverse, and the median time of one jitted
inverse of all 10^5 points (after warm-up, ``block_until_ready``). float64 runs in a child
process (x64 is process-wide). Runs on CPU, GPU or TPU (the device is printed).

Run: python benchmarks/numerical_inverse.py [--points 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import flowjax_lab as fl
from _common import device_info, print_table, time_call, write_results

T = fl.transforms


def sinh_arcsinh(x, raw):
    """A user's transformer (sinh-arcsinh), bounded params: see tests/registry.py."""
    log_a, b = 2.0 * jnp.tanh(raw[..., 0] / 2.0), 2.0 * jnp.tanh(raw[..., 1] / 2.0)
    u = b + jnp.exp(log_a) * jnp.arcsinh(x)
    return jnp.sinh(u), jnp.log(jnp.cosh(u)) + log_a - 0.5 * jnp.log1p(x * x)


MAPS = {  # name: (forward(x, raw) -> (y, _), raw params per element, raw scale)
    "spline (8 bins, B = 3)": (
        lambda x, raw: T.spline(8, 3.0).apply(_spline_params(raw), x),
        23,
        1.0,
    ),
    "sos (degree 2, 2 terms)": (T.sos_transformer(2, 2).forward, 7, 0.5),
    "dsf (8 units)": (T.dsf_transformer(8).forward, 24, 1.0),
    "sinh-arcsinh (user)": (sinh_arcsinh, 2, 1.0),
}


def _spline_params(raw):
    return {"widths": raw[..., :8], "heights": raw[..., 8:16], "derivatives": raw[..., 16:]}


def measure(points: int) -> list[dict]:
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    rows = []
    key = jax.random.key(0)
    for name, (forward, num_params, scale) in MAPS.items():
        k_raw, k_z = jax.random.split(jax.random.fold_in(key, len(rows)))
        raw = scale * jax.random.normal(k_raw, (points, num_params), dtype)
        z = 3.0 * jax.random.normal(k_z, (points,), dtype)
        f = lambda x, raw=raw, forward=forward: forward(x, raw)[0]  # noqa: E731
        solve = jax.jit(lambda z, f=f: T.solve_monotone(f, z))
        result = solve(z)
        err = np.abs(np.asarray(f(result.x)) - np.asarray(z))
        row = {
            "map": name,
            "dtype": np.dtype(dtype).name,
            "raw scale": scale,
            "max |f(g(z)) - z|": float(err.max()),
            "max rel": float((err / (1 + np.abs(np.asarray(z)))).max()),
            "converged": float(np.mean(np.asarray(result.converged))),
            "ms / 1e5 points": 1e3 * time_call(solve, z, repeats=5, warmup=1) * 1e5 / points,
        }
        if name.startswith("spline"):
            exact = T.spline(8, 3.0).inverse(_spline_params(raw), z)[0]
            row["max |g - g_exact|"] = float(np.abs(np.asarray(result.x - exact)).max())
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.points)))
        return
    info = device_info()
    print(
        f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}"
    )
    rows = measure(args.points)
    env = {**os.environ, "JAX_ENABLE_X64": "1"}
    cmd = [sys.executable, __file__, "--child", "--points", str(args.points)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rows += json.loads(out.stdout.strip().splitlines()[-1])
    columns = ["map", "dtype", "raw scale", "max |f(g(z)) - z|", "max rel", "converged",
               "max |g - g_exact|", "ms / 1e5 points"]  # fmt: skip
    print(f"{args.points} targets z ~ N(0, 9), default solver options")
    print_table(rows, columns)
    print(f"wrote {write_results('numerical_inverse', rows, {'points': args.points, **info})}")


if __name__ == "__main__":
    main()
