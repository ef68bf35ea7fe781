"""NeuTra on the 10-D Neal funnel: blackjax NUTS in a reverse-KL flow's base space vs on the raw target.

Target: ``fl.targets.funnel(10, 3.0)``, z = (v, x_1..x_9), v ~ N(0, 3^2), x_i | v ~ N(0, e^v)
(exact: E v = 0, sd v = 3). A flow is fitted by reverse KL, 1,024 samples per step: by default
an affine ``fl.models.iaf`` (3 layers, MLPs 2 x 32, elementwise affine), since the funnel is
itself one affine autoregressive map of N(0, I) (v = 3 u_0, x_i = e^(v/2) u_i); 1,000 plain
reverse-KL steps reach ELBO -0.02, ESS/n 0.94 in ~1 CPU-minute, where the spline recipe of
docs/guides/variational-inference.md (``--transformer spline --objective reverse_kl_stl``)
needs more steps than a short run has (1,000 plain steps: ELBO -0.69, ESS/n 0.03). Then, with the same
seed, the same number of warm-up steps (blackjax.window_adaptation, diagonal mass matrix) and
of draws, in ``--chains`` chains (vmapped), NUTS runs
  - on the raw target log pi(z), and
  - on u with log pi(g(u)) + log|det dg/du| (``fl.interop.neutra``), draws mapped back by g.
Reported on the data-space draws: ESS (numpyro.diagnostics.effective_sample_size, over the
chains) of v and the min / median over x_1..9, ESS per gradient evaluation of the sampling
phase (a NUTS leapfrog step is one gradient of the log density; in the base space each also
runs g), divergences, split R-hat of v, and the estimates of E v and sd v (0 and 3).

Run: python benchmarks/neutra_funnel.py [--steps 1000 --warmup 500 --draws 1000 --chains 4]
"""

from __future__ import annotations

import argparse
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

import flowjax_lab as fl
from _common import device_info, load_average, print_table, write_results

DIM, SIGMA = 10, 3.0


def fit_flow(target, args):
    flow = fl.models.iaf(DIM, args.layers, (args.hidden, args.hidden),
                         transformer=args.transformer, elementwise_affine=True)  # fmt: skip
    k_init, k_fit, k_diag = jax.random.split(jax.random.key(args.seed), 3)
    params = flow.init(k_init)
    start = time.perf_counter()
    result = fl.fit(k_fit, flow, params, objective=args.objective, target_log_prob=target,
                    steps=args.steps, batch_size=1024, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    diag = fl.importance_diagnostics(flow, target.log_prob, result.params, k_diag, n=8192)
    return flow, result.params, seconds, diag


def run_nuts(logdensity, key, args):
    """``--chains`` NUTS chains: window adaptation, then ``--draws`` draws each."""

    def one_chain(key):
        k_warm, k_draw = jax.random.split(key)
        warmup = blackjax.window_adaptation(blackjax.nuts, logdensity)
        (state, tuned), warm_info = warmup.run(k_warm, jnp.zeros(DIM), num_steps=args.warmup)
        kernel = blackjax.nuts(logdensity, **tuned).step

        def step(state, k):
            state, info = kernel(k, state)
            return state, (state.position, info.is_divergent, info.num_integration_steps)

        _, draws = jax.lax.scan(step, state, jax.random.split(k_draw, args.draws))
        warm_grads = jnp.sum(warm_info.info.num_integration_steps)
        return (*draws, warm_grads, tuned["step_size"])

    run = jax.jit(jax.vmap(one_chain))
    start = time.perf_counter()
    out = jax.block_until_ready(run(jax.random.split(key, args.chains)))
    return out, time.perf_counter() - start


def summarise(name, x, divergent, grads, warm_grads, step_size, seconds):
    x = np.asarray(x, np.float64)  # (chains, draws, DIM)
    ess = np.asarray(effective_sample_size(x))
    n_grads = float(np.sum(grads))
    return {
        "sampler": name,
        "ESS v": float(ess[0]),
        "ESS x min": float(ess[1:].min()),
        "ESS x median": float(np.median(ess[1:])),
        "grad evals": int(n_grads),
        "ESS v / grad": float(ess[0]) / n_grads,
        "ESS x min / grad": float(ess[1:].min()) / n_grads,
        "warm-up grads": int(np.sum(warm_grads)),
        "divergent": int(np.sum(divergent)),
        "R-hat v": float(split_gelman_rubin(x[..., 0])),
        "E v (0)": float(x[..., 0].mean()),
        "sd v (3)": float(x[..., 0].std()),
        "step size": float(np.median(step_size)),
        "s (with compile)": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="reverse-KL fit steps")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--transformer", default="affine", choices=["affine", "spline"])
    parser.add_argument("--objective", default="reverse_kl")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    target = fl.targets.funnel(DIM, SIGMA)
    flow, params, fit_s, diag = fit_flow(target, args)
    print(f"flow fit: {args.steps} steps of {args.objective} in {fit_s:.0f} s; ELBO "
          f"{float(diag.elbo):.3f} (log Z = 0), IS log Z {float(diag.log_z):.3f} +- "
          f"{float(diag.log_z_se):.3f}, ESS/n {float(diag.ess):.3f}")  # fmt: skip
    nt = fl.interop.neutra(flow, params, target)
    key = jax.random.key(args.seed + 1)  # the same key for both samplers
    raw, raw_s = run_nuts(target.log_prob, key, args)
    base, base_s = run_nuts(nt.log_density_in_base_space, key, args)
    u, *rest = base
    x_base = jax.vmap(jax.vmap(nt.to_data))(u)
    rows = [summarise("NUTS, raw target", *raw, raw_s),
            summarise("NUTS in flow base space (NeuTra)", x_base, *rest, base_s)]  # fmt: skip
    print(f"10-D funnel (sigma {SIGMA}); {args.chains} chains x {args.draws} draws after "
          f"{args.warmup} warm-up steps, same seed; ESS over chains, of the data-space draws")  # fmt: skip
    cols = ["sampler", "ESS v", "ESS x min", "ESS x median", "grad evals", "ESS v / grad",
            "ESS x min / grad", "divergent", "R-hat v", "E v (0)", "sd v (3)", "step size",
            "s (with compile)"]  # fmt: skip
    print_table(rows, cols)
    extra = {"args": vars(args), "fit_seconds": fit_s, "elbo": float(diag.elbo),
             "is_log_z": float(diag.log_z), "ess_per_n": float(diag.ess)}  # fmt: skip
    print(f"wrote {write_results('neutra_funnel', rows, extra)}")


if __name__ == "__main__":
    main()
