"""Reverse KL on 2-D Gaussian mixtures: does a trainable mixture base keep the modes?

Targets (normalised, log Z = 0, so KL(q || p) = -ELBO exactly up to Monte Carlo):
* ``three``: ``fl.targets.gaussian_mixture_target()`` (modes at (-2.5, 0), (2.5, 0), (0, 2.5),
  scale 0.5, weights 0.5 / 0.3 / 0.2);
* ``ring6``: six modes on a circle of radius 6, scale 0.4, weights 0.3 / 0.25 / 0.15 / 0.12 /
  0.1 / 0.08 (far apart: a unimodal start must split its mass six ways to find them all).

Rows, each trained by ``fl.fit(objective="reverse_kl_stl")`` with its defaults for ``--steps``
steps on ``--batch`` samples per step, for ``--seeds`` seeds:
* ``iaf spline``: ``fl.models.iaf(2, transformer="spline", elementwise_affine=True)``, the
  recommended reverse-KL model, on the fixed N(0, I) base;
* the same on ``base="gaussian_mixture"`` (a learned 4-component, or 8 for ring6, mixture);
* ``mixture base only``: the mixture base through one elementwise affine layer (no flow);
* ``mixture, plain draws``: the mixture base drawn as a plain mixture (components chosen by a
  discrete draw: the weights get no pathwise gradient), to show what the per-component
  estimator of ``reverse_kl`` adds.

Columns: KL(q || p) = -mean log w over 20,000 draws of q; KL(p || q) over 20,000 exact draws of
the target (this one punishes a missing mode); ESS / n; modes found (a mode counts when q puts at
least half its weight within 3 scales of its mean). Runs on CPU, GPU or TPU.

``--spread`` sets the mixture base's initial means ~ N(0, spread^2 I) (default 1: the
unit-scale start of ``fl.bases.gaussian_mixture``; set it to the target's scale when known).

Run: python benchmarks/mixture_reverse_kl.py [--steps 2000] [--seeds 3] [--spread 1]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import flowjax_lab as fl
from _common import device_info, load_average, pick, print_table, write_results

T = fl.transforms


def ring6():
    angles = np.arange(6) * 2 * math.pi / 6
    means = 6.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    weights = np.array([0.3, 0.25, 0.15, 0.12, 0.1, 0.08])
    return means, 0.4, weights


TARGETS = {
    "three": (np.array([(-2.5, 0.0), (2.5, 0.0), (0.0, 2.5)]), 0.5, np.array([0.5, 0.3, 0.2])),
    "ring6": ring6(),
}


def plain_draws(flow):
    """The same flow, with the mixture sampled as a plain mixture (no per-component draws)."""
    return flow._replace(base=flow.base._replace(weighted_sample=None))


def model(name: str, components: int, spread: float):
    base = fl.bases.gaussian_mixture((2,), components, spread=spread)
    if name == "iaf spline":
        return fl.models.iaf(2, transformer="spline", elementwise_affine=True)
    if name == "iaf spline, mixture base":
        return fl.models.iaf(2, transformer="spline", elementwise_affine=True, base=base)
    if name == "mixture base only":
        return fl.make_flow(T.affine(), base)
    if name == "mixture, plain draws":
        return plain_draws(fl.make_flow(T.affine(), base))
    raise ValueError(name)


MODELS = ("iaf spline", "iaf spline, mixture base", "mixture base only", "mixture, plain draws")


def modes_found(x, means, scale, weights) -> int:
    d = np.linalg.norm(x[:, None, :] - means[None], axis=-1)
    mass = np.mean(d < 3 * scale, axis=0)
    return int(np.sum(mass >= 0.5 * weights))


def run(target_name: str, name: str, seed: int, args) -> dict:
    means, scale, weights = TARGETS[target_name]
    target = fl.targets.gaussian_mixture_target(means, scale, weights)
    mixture = fl.data.gaussian_mixture(means, scale, weights)
    flow = model(name, 8 if target_name == "ring6" else 4, args.spread)
    k_init, k_fit, k_eval, k_data = jax.random.split(jax.random.key(seed), 4)
    start = time.perf_counter()
    result = fl.fit(k_fit, flow, flow.init(k_init), objective="reverse_kl_stl",
                    target_log_prob=target.log_prob, steps=args.steps, batch_size=args.batch,
                    progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    diag = fl.objectives.importance_diagnostics(flow, target.log_prob, result.params, k_eval, 20000)
    x = np.asarray(jax.jit(flow.sample, static_argnums=2)(result.params, k_eval, 20000))
    data = mixture.sample(k_data, 20000)
    kl_pq = float(jnp.mean(jax.vmap(target.log_prob)(data) - flow.log_prob(result.params, data)))
    return {"target": target_name, "model": name, "seed": seed,
            "KL(q||p)": -float(diag.elbo), "KL(p||q)": kl_pq, "ESS/n": float(diag.ess),
            "modes": f"{modes_found(x, means, scale, weights)}/{len(weights)}",
            "train s": round(seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--targets", default="three,ring6")
    parser.add_argument("--models", default=";".join(MODELS), help="semicolon-separated rows")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="std of the mixture base's initial means (its `spread`)")  # fmt: skip
    args = parser.parse_args()
    models = pick(parser, args.models, MODELS, "--models")
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    rows = []
    for target_name in args.targets.split(","):
        for name in models:
            for seed in range(args.seeds):
                rows.append(run(target_name, name, seed, args))
                print_table(rows[-1:], list(rows[-1]))
    summary = []
    for target_name in args.targets.split(","):
        for name in models:
            rs = [r for r in rows if r["target"] == target_name and r["model"] == name]
            summary.append({
                "target": target_name, "model": name, "spread": args.spread,
                "KL(q||p) median": float(np.median([r["KL(q||p)"] for r in rs])),
                "KL(p||q) median": float(np.median([r["KL(p||q)"] for r in rs])),
                "ESS/n median": float(np.median([r["ESS/n"] for r in rs])),
                "modes per seed": " ".join(r["modes"] for r in rs),
            })  # fmt: skip
    print()
    print_table(summary, list(summary[0]))
    path = write_results("mixture_reverse_kl", rows, {"summary": summary, "steps": args.steps,
                                                      "batch": args.batch, "spread": args.spread})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
