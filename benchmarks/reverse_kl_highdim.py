"""Reverse KL at d = 8-32 on targets with an exact log Z: our recipe against flowjax's MAF-RQS.

Targets (log Z exact):
* ``funnel``: Neal's funnel ``fl.targets.funnel(d, sigma=3)``, normalised (log Z = 0);
* ``many_well``: d / 2 copies of the 2-D double well of Midgley et al. (2023),
  log pi(x1, x2) = -x1^4 + 6 x1^2 + x1 / 2 - x2^2 / 2, so 2^(d/2) modes; log Z = (d / 2)
  (log int exp(-x^4 + 6 x^2 + x / 2) dx + log(2 pi) / 2), the 1-D integral by the trapezoid
  rule on [-6, 6] (its tails are below e^-900 beyond).
Rows, each trained for ``--steps`` steps on ``--batch`` base samples per step with the
stick-the-landing gradient and ``fl.default_optimizer(steps, lr)`` (peak lr ``--lr``):
* ours: the recipe, ``fl.models.iaf(d, 6, (64, 64), transformer="spline", bins=8, bound=4,
  elementwise_affine=True)`` with ``objective="reverse_kl_stl"``;
* flowjax: ``masked_autoregressive_flow(invert=False)`` with ``RationalQuadraticSpline(knots=8,
  interval=4)``, 6 layers, MLP 2 x 64 (its IAF direction), trained by ``fit_to_key_based_loss``
  with ``ElboLoss(target, batch, stick_the_landing=True)`` and the same optimiser.
Metrics from 20,000 importance samples: gap = log Z - ELBO (= KL(q || pi / Z) >= 0), ESS / n,
and train seconds (a shared machine: a rough guide). Runs on CPU, GPU or TPU.

Run: python benchmarks/reverse_kl_highdim.py [--dims 8,16,32] [--steps 2000] [--targets funnel,many_well]
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

N_IS = 20_000


def _well_log_z() -> float:
    x = np.linspace(-6.0, 6.0, 200_001)
    f = -(x**4) + 6 * x**2 + 0.5 * x
    m = f.max()
    return float(m + np.log(np.trapezoid(np.exp(f - m), x)))


def many_well(dim: int) -> fl.targets.Target:
    if dim % 2:
        raise ValueError(f"many_well needs an even dim, got {dim}")

    def log_prob(z):
        x1, x2 = z[0::2], z[1::2]
        return jnp.sum(-(x1**4) + 6 * x1**2 + 0.5 * x1 - 0.5 * x2**2)

    return fl.targets.Target(log_prob, dim, (dim // 2) * (_well_log_z() + 0.5 * math.log(2 * math.pi)))


TARGETS = {"funnel": lambda d: fl.targets.funnel(d, 3.0), "many_well": many_well}


def stats(log_w, log_z) -> dict:
    elbo = float(fl.mean_log_weight(log_w))
    return {"gap": log_z - elbo, "ESS/n": float(fl.ess(log_w))}


def ours(target, dim, args, seed):
    flow = fl.models.iaf(dim, 6, (64, 64), transformer="spline", bins=8, bound=4.0,
                         elementwise_affine=True)  # fmt: skip
    result = fl.fit(jax.random.key(3 + 10 * seed), flow, flow.init(jax.random.key(2 + 10 * seed)),
                    objective="reverse_kl_stl", target_log_prob=target.log_prob,
                    steps=args.steps, batch_size=args.batch,
                    optimizer=fl.default_optimizer(args.steps, args.lr), progress=False)  # fmt: skip
    _, log_w = fl.log_importance_weights(flow, target.log_prob, result.params,
                                         jax.random.key(9), N_IS)  # fmt: skip
    return log_w


def theirs(target, dim, args, seed):
    import flowjax.distributions as fd
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.flows import masked_autoregressive_flow
    from flowjax.train import fit_to_key_based_loss
    from flowjax.train.losses import ElboLoss

    flow = masked_autoregressive_flow(
        jax.random.key(2 + 10 * seed), base_dist=fd.Normal(jnp.zeros(dim)),
        transformer=RationalQuadraticSpline(knots=8, interval=4.0), invert=False, flow_layers=6,
        nn_width=64, nn_depth=2,
    )  # fmt: skip
    flow, _ = fit_to_key_based_loss(
        jax.random.key(3 + 10 * seed), flow,
        loss_fn=ElboLoss(target.log_prob, args.batch, stick_the_landing=True), steps=args.steps,
        learning_rate=args.lr, optimizer=fl.default_optimizer(args.steps, args.lr),
        show_progress=False,
    )  # fmt: skip
    x, log_q = jax.jit(lambda k: flow.sample_and_log_prob(k, (N_IS,)))(jax.random.key(9))
    return jax.vmap(target.log_prob)(x) - log_q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="8,16,32")
    parser.add_argument("--targets", default="funnel,many_well")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--no-flowjax", action="store_true")
    args = parser.parse_args()
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    libs = [("ours: iaf spline + affine (recipe)", ours)]
    if not args.no_flowjax:
        try:
            import flowjax  # noqa: F401

            libs.append(("flowjax: MAF(invert=False) RQS, STL", theirs))
        except ImportError:
            print("flowjax: not installed (the [bench] extra); ours only")
    rows = []
    for name in args.targets.split(","):
        for dim in (int(d) for d in args.dims.split(",")):
            target = TARGETS[name](dim)
            for lib, run in libs:
                for seed in range(args.seeds):
                    start = time.perf_counter()
                    try:
                        row = stats(run(target, dim, args, seed), target.log_z)
                    except (ValueError, FloatingPointError) as err:
                        row = {"error": repr(err)[:120]}
                    rows.append({"target": name, "d": dim, "log Z": target.log_z, "model": lib,
                                 "seed": seed, **row,
                                 "train s": round(time.perf_counter() - start, 1)})  # fmt: skip
                    print_table(rows[-1:], list(rows[-1]))
    print()
    print_table(rows, max((list(r) for r in rows), key=len))
    print(f"wrote {write_results('reverse_kl_highdim', rows, {'args': vars(args)})}")


if __name__ == "__main__":
    main()
