"""Our CNF (diffrax) against zuko's CNF (torch, CPU) on the 2-D banana: step time and NLL.

Same problem, same vector-field size and the same training: the banana of ``cnf_vs_nsf.py``
(H = log(2 pi e) exactly), 5,000 training rows, MLE with adam at 1e-3 on batches of 256 for
``--steps`` steps (the same batches for both), exact trace, adaptive solvers at rtol = atol =
``--tol``. Ours: ``fl.models.cnf(2, (64, 64), activation="tanh")`` (Tsit5, recursive
checkpointing; field input [z, t]). zuko: ``zuko.flows.CNF(2, hidden_features=(64, 64),
activation=torch.nn.Tanh)`` (its adaptive Dormand-Prince with adjoint; field input [z, 3 sin/cos
time features]). Reported: median step time over the last half of the steps, test NLL - H on
5,000 fresh rows after training, and the ratios (zuko / ours: > 1 means ours is faster or
better). zuko and torch are not dependencies of the project: ``pip install torch zuko``.
Runs our side on CPU, GPU or TPU; zuko on torch's CPU.

Run: python benchmarks/cnf_vs_zuko.py [--steps 300] [--tol 1e-4]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from cnf_vs_nsf import banana_data

import flowjax_lab as fl
from _common import adam_step, device_info, load_average, print_table, write_results

BATCH, LR = 256, 1e-3
ENTROPY = math.log(2 * math.pi * math.e * 2.0 * 0.5)


def ours(train, test, batches, tol):
    flow = fl.models.cnf(2, (64, 64), activation="tanh", rtol=tol, atol=tol)
    params = flow.init(jax.random.key(0))
    loss = fl.forward_kl(flow)
    opt, step = adam_step(lambda p, x: loss(p, x), LR)
    state, times = opt.init(params), []
    jax.block_until_ready(step(params, state, batches[0]))  # compile
    for x in batches:
        start = time.perf_counter()
        params, state, value = jax.block_until_ready(step(params, state, x))
        times.append(time.perf_counter() - start)
    nll = -float(jnp.mean(jax.jit(flow.log_prob)(params, test)))
    return times, nll


def zuko_run(train, test, batches, tol):
    try:
        import torch
        import zuko
    except ImportError:
        return None
    torch.manual_seed(0)
    flow = zuko.flows.CNF(2, hidden_features=(64, 64), activation=torch.nn.Tanh, atol=tol,
                          rtol=tol)  # fmt: skip
    opt = torch.optim.Adam(flow.parameters(), lr=LR)
    times = []
    for x in batches:
        xt = torch.as_tensor(np.array(x))
        start = time.perf_counter()
        loss = -flow().log_prob(xt).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        nll = -float(flow().log_prob(torch.as_tensor(np.array(test))).mean())
    return times, nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    train = np.asarray(banana_data(jax.random.key(0), 5000), np.float32)
    test = np.asarray(banana_data(jax.random.key(1), 5000), np.float32)
    rng = np.random.default_rng(0)
    batches = [jnp.asarray(train[rng.integers(0, len(train), BATCH)]) for _ in range(args.steps)]
    results = {"ours (diffrax, jax)": ours(train, test, batches, args.tol)}
    peer = zuko_run(train, test, batches, args.tol)
    if peer is not None:
        results["zuko (torch)"] = peer
    rows = []
    for name, (times, nll) in results.items():
        rows.append({"model": name, "step ms": 1e3 * statistics.median(times[len(times) // 2 :]),
                     "test NLL - H": nll - ENTROPY})  # fmt: skip
    if peer is not None:
        rows[0]["step: zuko / ours"] = rows[1]["step ms"] / rows[0]["step ms"]
        rows[0]["gap: zuko / ours"] = rows[1]["test NLL - H"] / rows[0]["test NLL - H"]
    print(f"\n{args.steps} MLE steps, batch {BATCH}, adam {LR}, tol {args.tol:g}, banana (H = {ENTROPY:.3f})")
    print_table(rows, max((list(r) for r in rows), key=len))
    print(f"wrote {write_results('cnf_vs_zuko', rows, {'args': vars(args)})}")


if __name__ == "__main__":
    main()
