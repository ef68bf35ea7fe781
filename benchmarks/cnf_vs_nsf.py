"""A continuous normalizing flow (fl.models.cnf) against a discrete NSF at equal wall time.

MLE on data whose entropy H is known: banana (z1 ~ N(0, 2^2), z2 = (z1^2 - 4) / 4 +
N(0, 0.5^2), a volume-preserving twist of a Gaussian, so H = log(2 pi e * 2 * 0.5) exactly and
log p is ``fl.targets.banana``), two_moons (H by the grid of ``fit_quality.py``) and banana8
(d = 8: four independent bananas, H = 4 x the banana's). Each model
trains for the same number of seconds (after its step has compiled): jitted MLE steps, adam at
1e-3 clipped at norm 1, random batches of 256 rows, as many as fit in the budget. Reported: held-out NLL - H (the KL gap, >= 0), the paired estimate
mean(log p - log q) with its standard error, the step time, the steps taken, and the function
evaluations per density evaluation: for the CNF the adaptive solver's mean steps on test rows
(from ``T.cnf_solve``) and its field evaluations, ``CNFSolution.num_evaluations`` (Tsit5:
1 + 6 per step), each an MLP pass plus d jvps;
for the NSF its number of coupling layers (one conditioner pass each).

zuko's CNF is compared in ``cnf_vs_zuko.py`` (torch and zuko are not project dependencies).

Run: python benchmarks/cnf_vs_nsf.py [--quick] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from fit_quality import ENTROPY_BOX, grid_entropy, kl_stats, two_moons_log_prob

import flowjax_lab as fl
import flowjax_lab.data as fl_data
from _common import device_info, load_average, print_table, write_results
from flowjax_lab import transforms as T

BATCH = 256
LR = 1e-3
NSF_LAYERS = 6


def banana_data(key, n):
    k1, k2 = jax.random.split(key)
    z1 = 2.0 * jax.random.normal(k1, (n,))
    return jnp.stack([z1, 0.25 * (z1**2 - 4.0) + 0.5 * jax.random.normal(k2, (n,))], axis=1)


def banana8_data(key, n):
    """Four independent bananas side by side: d = 8, entropy 4 x the banana's."""
    return jnp.concatenate([banana_data(k, n) for k in jax.random.split(key, 4)], axis=1)


def problem(name: str, grid: int):
    """(sample(key, n), log_p(batch), entropy, dim)."""
    banana_entropy = math.log(2 * math.pi * math.e * 2.0 * 0.5)
    if name == "banana":
        log_p = jax.vmap(fl.targets.banana().log_prob)
        return banana_data, log_p, banana_entropy, 2
    if name == "banana8":
        one = jax.vmap(fl.targets.banana().log_prob)
        log_p = lambda x: sum(one(x[:, 2 * i : 2 * i + 2]) for i in range(4))  # noqa: E731
        return banana8_data, log_p, 4 * banana_entropy, 8
    lo, hi = ENTROPY_BOX[name]
    h = grid_entropy(two_moons_log_prob, lo, hi, grid)[0]
    return fl_data.TOY_2D[name], two_moons_log_prob, h, 2


def models(cnf_tol: float, dim: int):
    return {
        f"cnf 2x64 tanh, tsit5 tol {cnf_tol:g}": fl.models.cnf(
            dim, (64, 64), rtol=cnf_tol, atol=cnf_tol
        ),
        f"nsf coupling {NSF_LAYERS} x (2x64), 16 bins": fl.models.nsf(
            dim, NSF_LAYERS, (64, 64), 16, bound=4.0
        ),
    }


def train_for(flow, params, data, budget: float):
    """Adam (clipped at norm 1) MLE steps on random batches until ``budget`` seconds have passed
    (the step's compile is done first, outside the budget). Returns (params, steps, seconds)."""
    loss = fl.forward_kl(flow)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(LR))
    data = jnp.asarray(data)

    @jax.jit
    def step(p, s, key):
        x = data[jax.random.randint(key, (BATCH,), 0, data.shape[0])]
        value, g = jax.value_and_grad(loss)(p, x)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, value

    state, key = opt.init(params), jax.random.key(3)
    jax.block_until_ready(step(params, state, key))  # compile
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        params, state, value = step(params, state, jax.random.fold_in(key, steps))
        steps += 1
        if steps % 20 == 0:
            jax.block_until_ready(value)
    jax.block_until_ready(params)
    return params, steps, time.perf_counter() - start


def rows_for(name, budget, n_train, n_test, grid, cnf_tol):
    sample, log_p, entropy, dim = problem(name, grid)
    data = np.asarray(sample(jax.random.key(0), n_train))
    test = np.asarray(sample(jax.random.key(1), n_test))
    log_p_test = np.asarray(log_p(jnp.asarray(test)), np.float64)
    rows = []
    for model, flow in models(cnf_tol, dim).items():
        params, steps, fit_s = train_for(flow, flow.init(jax.random.key(2)), data, budget)
        log_q = np.asarray(jax.jit(flow.log_prob)(params, test), np.float64)
        if model.startswith("cnf"):
            sols = jax.jit(jax.vmap(lambda x, p=params, f=flow: T.cnf_solve(f.transform, p, x)))(
                jnp.asarray(test[:1024])
            )
            solver_steps = float(jnp.mean(sols.num_steps))
            evals = float(jnp.mean(sols.num_evaluations))
        else:
            solver_steps, evals = None, float(NSF_LAYERS)
        rows.append({"problem": name, "H": entropy, "model": model,
                     "step_ms": 1e3 * fit_s / steps, "steps": steps, "fit_s": fit_s,
                     "solver_steps": solver_steps, "evals_per_density": evals,
                     **kl_stats(log_q, log_p_test, entropy)})  # fmt: skip
        print(f"  {name} / {model}: {steps} steps, gap {rows[-1]['gap']:.3f}", flush=True)
    return rows


def main(quick: bool, budget: float | None, cnf_tol: float, names: list[str]) -> None:
    wall = time.perf_counter()
    print("device:", device_info(), "load:", load_average())
    budget = budget or (25.0 if quick else 300.0)
    n_train, n_test, grid = (5_000, 5_000, 400) if quick else (20_000, 50_000, 1000)
    rows = []
    for name in names:
        rows += rows_for(name, budget, n_train, n_test, grid, cnf_tol)
    wall = time.perf_counter() - wall
    print(f"\nMLE at equal wall time ({budget:g} s of training steps per model): gap = test NLL"
          " - H (nats); evals_per_density: CNF field evaluations (1 + 6 x solver steps), NSF"
          " conditioner passes")  # fmt: skip
    print_table(rows, ["problem", "model", "step_ms", "steps", "fit_s", "test_nll", "gap",
                       "kl_paired", "kl_se", "solver_steps", "evals_per_density"])  # fmt: skip
    print(f"\nwall time: {wall:.0f} s")
    extra = {"settings": {"quick": quick, "budget_s": budget, "batch": BATCH, "lr": LR,
                          "cnf_tol": cnf_tol, "n_train": n_train, "n_test": n_test},
             "wall_s": wall, "load_average": load_average()}  # fmt: skip
    print("wrote", write_results("cnf_vs_nsf_quick" if quick else "cnf_vs_nsf", rows, extra))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25 s per model, about 3 minutes")
    parser.add_argument("--budget", type=float, default=None, help="training seconds per model")
    parser.add_argument("--cnf-tol", type=float, default=1e-4, help="the CNF's rtol = atol")
    parser.add_argument("--problems", default="banana,two_moons,banana8",
                        help="comma-separated: banana, two_moons, banana8 (d = 8)")  # fmt: skip
    args = parser.parse_args()
    names = args.problems.split(",")
    if not set(names) <= {"banana", "two_moons", "banana8"}:
        parser.error(f"unknown --problems in {names}; choose from banana, two_moons, banana8")
    main(args.quick, args.budget, args.cnf_tol, names)
