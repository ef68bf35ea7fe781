"""Fit quality of each flow family on the 2-D sets with an exact density, at equal steps.

MLE by ``fl.fit`` (its default optimiser: adam, warm-up + cosine decay, clipping) for
``--steps`` steps on 18,000 training rows (2,000 more for validation, best params kept), batch
256, for each family at a comparable size (~10-20k params). Metric: the paired KL estimate
mean(log p - log q) over 20,000 fresh test rows (>= 0, 0 iff exact) with its standard error;
p is the exact density of ``fl.data.TOY_2D_LOG_PROB`` (eight_gaussians, rings, checkerboard).
Also: train seconds (on a shared machine only a rough guide) and sampling seconds for 10,000
draws (through the numerical inverse for naf, sospf, bpf and bnaf). Runs on CPU, GPU or TPU.

Run: python benchmarks/families_fit.py [--steps 3000] [--targets eight_gaussians,rings,checkerboard]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import flowjax_lab as fl
from _common import device_info, load_average, pick, print_table, write_results

M = fl.models
FAMILIES = {
    "nsf (coupling, 16 bins)": lambda: M.nsf(2, 6, (64, 64), 16),
    "maf (affine)": lambda: M.maf(2, 6, (64, 64)),
    "naf (deep sigmoidal, 8 units)": lambda: M.naf(2, 4, (64, 64), 8),
    "sospf (degree 2, 2 terms)": lambda: M.sospf(2, 4, (64, 64), 2, 2),
    "bpf (degree 12)": lambda: M.bpf(2, 4, (64, 64), 12),
    "bnaf (2 layers, 16 per dim)": lambda: M.bnaf(2, 2, 16, 2),
    "bnaf (1 layer, 64 per dim)": lambda: M.bnaf(2, 1, 64, 2),
}


def run(target: str, name: str, args) -> dict:
    sample, log_p = fl.data.TOY_2D[target], fl.data.TOY_2D_LOG_PROB[target]
    train, val = sample(jax.random.key(1), 18_000), sample(jax.random.key(6), 2_000)
    test = sample(jax.random.key(2), 20_000)
    flow = FAMILIES[name]()
    params = flow.init(jax.random.key(0))
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    row = {"target": target, "family": name, "params": n_params}
    start = time.perf_counter()
    try:
        result = fl.fit(jax.random.key(3), flow, params, data=train, steps=args.steps,
                        batch_size=256, val_data=val, progress=False)  # fmt: skip
    except fl.TrainingDivergedError as err:
        return {**row, "KL(p||q)": f"diverged at step {err.step}"}
    train_s = time.perf_counter() - start
    diff = np.asarray(log_p(test) - flow.log_prob(result.params, test))
    sampler = jax.jit(flow.sample, static_argnums=2)
    jax.block_until_ready(sampler(result.params, jax.random.key(4), 10_000))
    start = time.perf_counter()
    jax.block_until_ready(sampler(result.params, jax.random.key(5), 10_000))
    sample_s = time.perf_counter() - start
    return {**row, "KL(p||q)": float(diff.mean()), "± SE": float(diff.std() / np.sqrt(diff.size)),
            "train s": round(train_s, 1), "sample 10k s": round(sample_s, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--targets", default="eight_gaussians,rings,checkerboard")
    parser.add_argument("--families", default=";".join(FAMILIES), help="semicolon-separated")
    args = parser.parse_args()
    families = pick(parser, args.families, FAMILIES, "--families")
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    rows = []
    for target in args.targets.split(","):
        for name in families:
            rows.append(run(target, name, args))
            print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, max((list(r) for r in rows), key=len))
    print(f"wrote {write_results('families_fit', rows, {'steps': args.steps})}")


if __name__ == "__main__":
    main()
