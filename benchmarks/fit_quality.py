"""Fit quality of fl.fit against flowjax on 2-D problems whose answer is known exactly.

MLE (forward KL) on 2-D data with an exactly computable density: eight_gaussians, rings,
checkerboard (closed forms in ``fl.data.TOY_2D_LOG_PROB``) and two_moons, whose density is the
convolution of the uniform measure on two half circles with N(0, 0.2^2 I); it is computed here
as a 1-D integral over the arc parameter t by the midpoint rule (``TWO_MOONS_NODES`` nodes; the
integrand is smooth on the noise scale; going from 512 to 1024 nodes moves the entropy by 6e-6).
The true entropy H = -int p log p is the midpoint rule of -p log p on an n x n grid over a box
holding all but a negligible mass (``ENTROPY_BOX``; n = ``GRID`` per axis, and the change from
n / 2 is reported as ``H_grid_delta``). Metric: the held-out KL gap, test NLL - H (>= 0 up to
Monte Carlo error, 0 iff the fit is exact), and the paired estimate mean(log p - log q) on the
same test rows with its standard error (same expectation, much lower variance).

Reverse KL on targets with known log Z: u1 (log Z by quadrature, ``QUADRATURE_LOG_Z``), banana,
funnel (2-D, sigma 3) and the 3-mode Gaussian mixture (normalised, log Z = 0). Metrics from
``N_IS`` importance samples: log Z - ELBO (= KL(q || pi / Z) >= 0) and ESS / n.

Rows are named by recipe. Each library's default recipe, plus ours on flowjax's architecture so
that one pair of rows compares like with like (same widths, depth, knots, interval, steps, peak
learning rate, optimiser and gradient estimator; the only difference is the library):
  * MLE: ``fl.models.nsf`` -- rational-quadratic spline coupling, 6 steps, MLP 2x64, 16 bins on
    [-4, 4], with (recipe) or without (like flowjax) a learned elementwise affine after each
    spline. flowjax: ``coupling_flow`` with ``RationalQuadraticSpline(knots=16, interval=4)``,
    trained by ``fit_to_data``.
  * Reverse KL: an IAF with rational-quadratic spline transformers (MADE 2x64, 8 bins on
    [-4, 4]), 6 steps, with (recipe) or without (like flowjax) a learned elementwise affine per
    step: ``fl.models.flow_of_steps(T.iaf(transformer="spline", ...), ...)``, trained with
    ``objective="reverse_kl_stl"``. flowjax: ``masked_autoregressive_flow(..., invert=False)``
    (its IAF direction) with the same spline, trained by ``fit_to_key_based_loss`` with
    ``ElboLoss(target, 1024, stick_the_landing=True)`` -- the same estimator as ours.
Reverse KL draws 1,024 base samples per step in both libraries. Reverse-KL rows are medians over
``--seeds`` runs per row (init and training keys vary, the importance samples' key does not),
since one seed's gap can move by 2-3x.

Optimisers: every row runs fl.fit's default (adam, warm-up + cosine decay to lr/10, clipping at
norm 1), flowjax through its ``optimizer=`` argument; ``--flowjax-defaults`` gives flowjax its
own default instead (constant-rate adam at the same peak lr, and the plain ELBO gradient).
MLE: both see the same N rows and hold out 10% for validation, returning the best params
(flowjax checks once per epoch, fl.fit every 100 steps); flowjax's step count is epochs x
batches per epoch, the nearest to ours.

Run: python benchmarks/fit_quality.py [--quick] [--flowjax-defaults] [--no-flowjax] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

import flowjax_lab as fl
import flowjax_lab.data as fl_data
from _common import device_info, print_table, write_results
from flowjax_lab import targets as fl_targets
from flowjax_lab import transforms as T

LR = 1e-3
BATCH = 256  # MLE rows per step
RKL_BATCH = 1024  # reverse KL base samples per step (both libraries)
LAYERS, WIDTH, DEPTH = 6, 64, 2
MLE_BINS, RKL_BINS, BOUND = 16, 8, 4.0
N_IS = 20_000
TWO_MOONS_NODES = 512
ENTROPY_BOX = {  # (lo, hi) per axis; the grid's mass is 1 to float32 precision (~1e-7)
    "eight_gaussians": ((-5.5, -5.5), (5.5, 5.5)),
    "two_moons": ((-4.5, -3.5), (4.5, 4.0)),
    "rings": ((-4.0, -4.0), (4.0, 4.0)),
    "checkerboard": ((-4.0, -4.0), (4.0, 4.0)),  # the support; cell edges fall on grid edges
}
TARGET_NAMES = ["u1", "banana", "funnel", "gaussian_mixture"]


# ------------------------------------------------------------------ exact 2-D data densities


def two_moons_log_prob(x: jax.Array, nodes: int = TWO_MOONS_NODES) -> jax.Array:
    """log p(x) of ``fl.data.two_moons``, x of shape (..., 2).

    p(x) = 1/2 sum_moon (1/pi) int_0^pi N(x; 2 c_moon(t) + (-1, -0.2), 0.2^2 I) dt, with
    c_upper = (cos t, sin t), c_lower = (1 - cos t, 0.5 - sin t); midpoint rule in t.
    """
    t = (np.arange(nodes) + 0.5) * (math.pi / nodes)
    upper = np.stack([np.cos(t), np.sin(t)], -1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1)
    centres = 2.0 * np.concatenate([upper, lower]) + np.array([-1.0, -0.2])  # (2 nodes, 2)
    s2 = 0.2**2
    sq = jnp.sum((x[..., None, :] - jnp.asarray(centres, x.dtype)) ** 2, -1)
    log_comp = -0.5 * sq / s2 - math.log(2.0 * math.pi * s2)
    return logsumexp(log_comp, -1) - math.log(2 * nodes)


def log_density(name: str):
    return two_moons_log_prob if name == "two_moons" else fl_data.TOY_2D_LOG_PROB[name]


def grid_entropy(log_prob, lo, hi, n: int) -> tuple[float, float]:
    """(-int p log p, int p) over the box by the midpoint rule on an n x n grid."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    h = (hi - lo) / n
    xs = [lo[i] + h[i] * (np.arange(n) + 0.5) for i in range(2)]
    grid = np.stack(np.meshgrid(*xs, indexing="ij"), -1).astype(np.float32)  # (n, n, 2)

    @jax.jit
    def rows(g):
        def one(row):
            lp = log_prob(row)
            p = jnp.exp(lp)
            plogp = jnp.where(p > 0, p * lp, 0.0)
            return jnp.stack([jnp.sum(plogp), jnp.sum(p)])

        return jax.lax.map(one, g)

    sums = np.asarray(rows(jnp.asarray(grid)), np.float64).sum(0) * h[0] * h[1]
    return float(-sums[0]), float(sums[1])


# ------------------------------------------------------------------ models


def mle_model(affine: bool = True):
    return fl.models.nsf(
        2, LAYERS, (WIDTH,) * DEPTH, MLE_BINS, bound=BOUND, elementwise_affine=affine
    )


def rkl_model(affine: bool = True):
    layer = T.iaf(hidden=(WIDTH,) * DEPTH, transformer="spline", bins=RKL_BINS, bound=BOUND)
    return fl.models.flow_of_steps(layer, 2, LAYERS, elementwise_affine=affine)


def flowjax_available() -> bool:
    try:
        import flowjax  # noqa: F401
    except ImportError:
        return False
    return True


def flowjax_flow(kind: str, key):
    import flowjax.distributions as fd
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.flows import coupling_flow, masked_autoregressive_flow

    base = fd.Normal(jnp.zeros(2))
    common = dict(base_dist=base, flow_layers=LAYERS, nn_width=WIDTH, nn_depth=DEPTH)
    if kind == "mle":
        spline = RationalQuadraticSpline(knots=MLE_BINS, interval=BOUND)
        return coupling_flow(key, transformer=spline, **common)
    spline = RationalQuadraticSpline(knots=RKL_BINS, interval=BOUND)
    return masked_autoregressive_flow(key, transformer=spline, invert=False, **common)


# ------------------------------------------------------------------ MLE rows


def kl_stats(log_q: np.ndarray, log_p: np.ndarray, entropy: float) -> dict:
    nll = -float(np.mean(log_q))
    diff = log_p - log_q
    return {
        "test_nll": nll,
        "gap": nll - entropy,
        "kl_paired": float(np.mean(diff)),
        "kl_se": float(np.std(diff) / math.sqrt(diff.size)),
    }


def mle_rows(name, steps, n_train, n_test, grid, use_flowjax, fj_defaults):
    log_p = log_density(name)
    lo, hi = ENTROPY_BOX[name]
    start = time.perf_counter()
    entropy, mass = grid_entropy(log_p, lo, hi, grid)
    entropy_half, _ = grid_entropy(log_p, lo, hi, grid // 2)
    grid_s = time.perf_counter() - start
    sample = fl_data.TOY_2D[name]
    data = np.asarray(sample(jax.random.key(0), n_train))
    test = np.asarray(sample(jax.random.key(1), n_test))
    log_p_test = np.asarray(log_p(jnp.asarray(test)), np.float64)
    n_fit = int(0.9 * n_train)
    base = {
        "task": "mle",
        "problem": name,
        "H_grid": entropy,
        "H_grid_delta": abs(entropy - entropy_half),
        "grid_mass": mass,
        "grid": f"{grid}x{grid} on [{lo[0]},{hi[0]}]x[{lo[1]},{hi[1]}]",
        "grid_s": grid_s,
    }

    rows = []
    for model, affine in (
        ("nsf coupling + affine (recipe)", True),
        ("nsf coupling (like flowjax)", False),
    ):
        flow = mle_model(affine)
        params = flow.init(jax.random.key(2))
        start = time.perf_counter()
        result = fl.fit(
            jax.random.key(3),
            flow,
            params,
            data=data[:n_fit],
            val_data=data[n_fit:],
            val_every=100,
            steps=steps,
            batch_size=BATCH,
            optimizer=fl.default_optimizer(steps, LR),
            progress=False,
        )
        log_q = np.asarray(jax.jit(flow.log_prob)(result.params, test), np.float64)
        rows.append(
            {
                **base,
                "lib": "flowjax_lab",
                "model": model,
                "steps": steps,
                "fit_s": time.perf_counter() - start,
                **kl_stats(log_q, log_p_test, entropy),
            }
        )
    if use_flowjax:
        from flowjax.train import fit_to_data

        fj = flowjax_flow("mle", jax.random.key(2))
        per_epoch = n_fit // BATCH
        epochs = max(1, round(steps / per_epoch))
        opt = {} if fj_defaults else dict(optimizer=fl.default_optimizer(epochs * per_epoch, LR))
        start = time.perf_counter()
        fj, _ = fit_to_data(
            jax.random.key(3),
            fj,
            data,
            max_epochs=epochs,
            batch_size=BATCH,
            learning_rate=LR,
            max_patience=10**9,
            val_prop=0.1,
            show_progress=False,
            **opt,
        )
        log_q = np.asarray(jax.jit(lambda x: fj.log_prob(x))(jnp.asarray(test)), np.float64)
        rows.append(
            {
                **base,
                "lib": "flowjax",
                "model": "coupling_flow RQS" + (" (its defaults)" if fj_defaults else ""),
                "steps": epochs * per_epoch,
                "fit_s": time.perf_counter() - start,
                **kl_stats(log_q, log_p_test, entropy),
            }
        )
    return rows


# ------------------------------------------------------------------ reverse-KL rows


def is_stats(log_w: jax.Array, log_z_true: float) -> dict:
    log_z, se = fl.log_z_estimate(log_w)
    elbo = float(fl.mean_log_weight(log_w))
    return {
        "elbo": elbo,
        "gap": log_z_true - elbo,
        "log_z_is": float(log_z),
        "log_z_se": float(se),
        "ess": float(fl.ess(log_w)),
    }


def rkl_rows(name, steps, use_flowjax, fj_defaults, seeds):
    """One row per library: median over ``seeds`` runs (init key 2 + 10 s, fit key 3 + 10 s) of
    gap and ESS/n, with their ranges; importance samples from the same key for every run."""
    target = fl_targets.TARGETS[name]()
    log_z_true = fl_targets.QUADRATURE_LOG_Z[name] if target.log_z is None else target.log_z
    base = {"task": "reverse_kl", "problem": name, "log_z": log_z_true, "steps": steps}

    def ours(seed, affine):
        flow = rkl_model(affine)
        params = flow.init(jax.random.key(2 + 10 * seed))
        result = fl.fit(
            jax.random.key(3 + 10 * seed),
            flow,
            params,
            objective="reverse_kl_stl",
            target_log_prob=target,
            steps=steps,
            batch_size=RKL_BATCH,
            optimizer=fl.default_optimizer(steps, LR),
            progress=False,
        )
        _, log_w = fl.log_importance_weights(
            flow, target.log_prob, result.params, jax.random.key(9), N_IS
        )
        return is_stats(log_w, log_z_true)

    def theirs(seed):
        from flowjax.train import fit_to_key_based_loss
        from flowjax.train.losses import ElboLoss

        fj = flowjax_flow("rkl", jax.random.key(2 + 10 * seed))
        opt = {} if fj_defaults else dict(optimizer=fl.default_optimizer(steps, LR))
        fj, _ = fit_to_key_based_loss(
            jax.random.key(3 + 10 * seed),
            fj,
            loss_fn=ElboLoss(target.log_prob, RKL_BATCH, stick_the_landing=not fj_defaults),
            steps=steps,
            learning_rate=LR,
            show_progress=False,
            **opt,
        )
        x, log_q = jax.jit(lambda k: fj.sample_and_log_prob(k, (N_IS,)))(jax.random.key(9))
        return is_stats(jax.vmap(target.log_prob)(x) - log_q, log_z_true)

    libs = [
        ("flowjax_lab", "iaf spline + affine (recipe)", lambda seed: ours(seed, True)),
        ("flowjax_lab", "iaf spline (like flowjax)", lambda seed: ours(seed, False)),
    ]
    if use_flowjax:
        model = "MAF(invert=False) RQS" + (" (its defaults)" if fj_defaults else ", STL")
        libs.append(("flowjax", model, theirs))
    rows = []
    for lib, model, run in libs:
        start = time.perf_counter()
        try:
            runs = [run(seed) for seed in range(seeds)]
        except (ValueError, FloatingPointError) as err:
            rows.append({**base, "lib": lib, "model": model, "error": repr(err)[:200]})
            continue
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        gaps, esss = [r["gap"] for r in runs], [r["ess"] for r in runs]
        rows.append(
            {
                **base,
                "lib": lib,
                "model": model,
                "seeds": seeds,
                **med,
                "gap_range": f"{min(gaps):.4f}-{max(gaps):.4f}",
                "ess_range": f"{min(esss):.3f}-{max(esss):.3f}",
                "fit_s": (time.perf_counter() - start) / seeds,
                "runs": runs,
            }
        )
    return rows


# ------------------------------------------------------------------ main


def main(quick: bool, fj_defaults: bool, no_flowjax: bool, seeds: int) -> None:
    wall = time.perf_counter()
    print("device:", device_info())
    use_flowjax = flowjax_available() and not no_flowjax
    if not use_flowjax:
        print("flowjax: not used (not installed or --no-flowjax)")
    mle_steps, rkl_steps = (300, 300) if quick else (3000, 2000)
    n_train, n_test, grid = (5_000, 5_000, 400) if quick else (20_000, 50_000, 1000)
    datasets = ["eight_gaussians", "two_moons"] if quick else list(ENTROPY_BOX)
    targets = ["banana", "u1"] if quick else TARGET_NAMES

    rows = []
    for name in datasets:
        rows += mle_rows(name, mle_steps, n_train, n_test, grid, use_flowjax, fj_defaults)
        print(f"  mle {name}: done ({time.perf_counter() - wall:.0f} s)", flush=True)
    for name in targets:
        rows += rkl_rows(name, rkl_steps, use_flowjax, fj_defaults, 1 if quick else seeds)
        print(f"  reverse_kl {name}: done ({time.perf_counter() - wall:.0f} s)", flush=True)
    wall = time.perf_counter() - wall

    print("\nMLE: gap = test NLL - H_grid (nats); kl_paired = mean(log p - log q) on test rows")
    print_table(
        [r for r in rows if r["task"] == "mle"],
        ["problem", "lib", "model", "steps", "H_grid", "test_nll", "gap", "kl_paired", "kl_se",
         "fit_s"],
    )  # fmt: skip
    print(
        f"\nReverse KL: gap = log Z - ELBO (nats), ESS / n from {N_IS} samples; medians over "
        "seeds, with ranges"
    )
    print_table(
        [r for r in rows if r["task"] == "reverse_kl"],
        ["problem", "lib", "model", "steps", "seeds", "log_z", "gap", "gap_range", "log_z_is",
         "log_z_se", "ess", "ess_range", "fit_s", "error"],
    )  # fmt: skip
    print(f"\nwall time: {wall:.0f} s")
    extra = {
        "settings": {
            "quick": quick,
            "flowjax_defaults": fj_defaults,
            "lr": LR,
            "batch": BATCH,
            "reverse_kl_batch": RKL_BATCH,
            "reverse_kl_seeds": seeds,
            "layers": LAYERS,
            "width": WIDTH,
            "depth": DEPTH,
            "mle_bins": MLE_BINS,
            "rkl_bins": RKL_BINS,
            "bound": BOUND,
            "n_train": n_train,
            "n_test": n_test,
            "n_importance": N_IS,
            "two_moons_nodes": TWO_MOONS_NODES,
        },
        "wall_s": wall,
    }
    print("wrote", write_results("fit_quality_quick" if quick else "fit_quality", rows, extra))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, well under 2 minutes")
    parser.add_argument(
        "--flowjax-defaults",
        action="store_true",
        help="flowjax with its own optimizer and the plain ELBO gradient (not like with like)",
    )
    parser.add_argument("--no-flowjax", action="store_true", help="skip the flowjax rows")
    parser.add_argument("--seeds", type=int, default=3, help="reverse-KL runs per library")
    args = parser.parse_args()
    main(args.quick, args.flowjax_defaults, args.no_flowjax, args.seeds)
