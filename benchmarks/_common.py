"""Shared benchmark helpers: timing with warm-up and block_until_ready, device info, JSON out."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax


def device_info() -> dict:
    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def time_call(fn, *args, repeats: int = 21, warmup: int = 3) -> float:
    """Median wall time in seconds of ``fn(*args)`` after warm-up, blocking on the result."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def adam_step(loss_fn, lr: float = 1e-3):
    """(optimizer, jitted step): ``step(params, state, batch) -> (params, state, loss)``, one
    adam update of ``loss_fn(params, batch)`` (the train step the speed benchmarks time)."""
    import optax

    opt = optax.adam(lr)

    @jax.jit
    def step(params, state, batch):
        value, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return opt, step


def flowjax_calls(dist, x, batch, n_sample: int) -> dict:
    """The timed calls of a flowjax distribution: log_prob of ``x``, ``n_sample`` draws, and one
    adam step of its maximum-likelihood loss on ``batch`` (equinox's filter_jit)."""
    import equinox as eqx
    from flowjax.train.losses import MaximumLikelihoodLoss

    log_prob = eqx.filter_jit(lambda d, v: d.log_prob(v))
    sample = eqx.filter_jit(lambda d, k: d.sample(k, (n_sample,)))
    params, static = eqx.partition(dist, eqx.is_inexact_array)
    loss = MaximumLikelihoodLoss()
    opt, step = adam_step(lambda p, b: loss(p, static, b))
    state = opt.init(params)
    return {
        "log_prob": lambda: log_prob(dist, x),
        "sample": lambda: sample(dist, jax.random.key(3)),
        "step": lambda: step(params, state, batch),
    }


def pick(parser, value: str, allowed, flag: str) -> list[str]:
    """The semicolon-separated names in ``value``, each one of ``allowed`` (else a usage error
    naming the unknown ones)."""
    names = value.split(";")
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        parser.error(f"unknown {flag} {unknown}; choose from {list(allowed)}")
    return names


def compile_seconds(fn, *args) -> float:
    """Seconds to lower and compile ``jax.jit(fn)`` for these arguments (no execution)."""
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start


def categorical_bits(train, test, levels: int):
    """Per-image bits/dim of independent per-pixel categoricals fitted on ``train`` (integer
    pixels in [0, levels)) with add-one smoothing, on ``test``: the image baseline with no pixel
    dependence (an exact discrete likelihood, comparable to a dequantised flow's bits/dim)."""
    import numpy as np

    flat_train = np.asarray(train).reshape(len(train), -1).astype(int)
    flat_test = np.asarray(test).reshape(len(test), -1).astype(int)
    counts = np.stack([np.bincount(col, minlength=levels) for col in flat_train.T])
    probs = (counts + 1.0) / (len(flat_train) + levels)  # (D, L)
    return -np.log2(probs[np.arange(flat_test.shape[1]), flat_test]).mean(axis=1)


def vector_nsf(dim: int):
    """The vector NSF baseline of the image benchmarks (``configs/nsf_digits.yaml``'s model).

    ``chain(logit(0.05), nsf)`` on the flattened image in [0, 1]^dim: 8 rational-quadratic
    coupling layers, MLPs 2 x 256, 8 bins, random permutations between layers.
    """
    import flowjax_lab as fl
    from flowjax_lab import transforms as T

    nsf = fl.models.nsf(dim, 8, (256, 256), 8, permutation="random")
    return fl.make_flow(fl.chain(T.logit(0.05), nsf.transform), event_shape=(dim,))


def write_results(name: str, rows: list[dict], extra: dict | None = None) -> str:
    out_dir = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"device": device_info(), "rows": rows, **(extra or {})}, f, indent=2)
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)) + " |")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def round_ratios(theirs: list[float], ours: list[float]) -> dict:
    """Per-round ratios ``theirs[r] / ours[r]`` (times, or ours/theirs for rates) with their
    median and minimum: the noise of a ratio is visible only round by round."""
    ratios = [t / o for t, o in zip(theirs, ours, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "rounds": ratios}


def check_aim(label: str, ratio: dict, median_at_least: float, min_at_least: float | None = None):
    """One PASS/MISS line for an aim on a ratio from ``round_ratios``; returns (line, passed)."""
    passed = ratio["median"] >= median_at_least
    aim = f"median >= {median_at_least:g}"
    if min_at_least is not None:
        passed = passed and ratio["min"] >= min_at_least
        aim += f", no round < {min_at_least:g}"
    rounds = " ".join(f"{r:.2f}" for r in ratio["rounds"])
    got = f"median {ratio['median']:.3f}, min {ratio['min']:.3f} (rounds: {rounds})"
    line = f"{'PASS' if passed else 'MISS'}  {label}: {aim}; {got}"
    return line, passed


def load_average() -> str:
    """The 1/5/15-minute load averages, or '' where the OS has none (the machine may be shared)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return ""
