"""numpyro SVI with a flow guide (``fl.interop.flow_guide``) vs numpyro's AutoNormal and
AutoMultivariateNormal, on two models whose posteriors are not Gaussian.

- ``banana``: z1 ~ N(0, 2^2), z2 | z1 ~ N(0.25 (z1^2 - 4), 0.5^2) as numpyro sample sites and no
  data, so the posterior is that banana with log Z = 0 exactly: KL(q || p) = -ELBO, and the
  moments are exact (E z = 0, sd z1 = 2, sd z2 = sqrt(0.25 + 0.0625 * 2 * 16) = 1.5).
- ``eight_schools``: the centred hierarchical model (mu ~ N(0, 5^2), tau ~ HalfCauchy(5),
  theta_j ~ N(mu, tau^2), y_j ~ N(theta_j, sigma_j^2)), whose posterior is a funnel in
  (log tau, theta). Its reference moments come from long NUTS on the non-centred form
  (numpyro, 4 chains); log Z is unknown, so ELBOs compare guides (the ELBO difference of two
  guides is exactly their KL difference).

Each guide: ``--steps`` SVI steps of Trace_ELBO(``--particles``) with Adam (cosine decay from
``--lr``), same seed; then the ELBO from 20,000 particles and the moments of 20,000 guide draws.
"Moment error" is max_i |mean_q - mean_ref| / sd_ref and max_i |sd_q / sd_ref - 1| over the
latents (for eight schools: mu, log tau and the 8 theta).

Run: python benchmarks/svi_flow_guide.py [--steps 5000 --particles 8]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoMultivariateNormal, AutoNormal
from numpyro.infer.reparam import LocScaleReparam

import flowjax_lab as fl
from _common import device_info, load_average, print_table, write_results

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA_Y = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def banana():
    z1 = numpyro.sample("z1", dist.Normal(0.0, 2.0))
    numpyro.sample("z2", dist.Normal(0.25 * (z1**2 - 4.0), 0.5))


def eight_schools():
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, SIGMA_Y), obs=Y)


def _features(name, draws):
    """The latents whose moments are compared, as columns (n, k)."""
    if name == "banana":
        return np.stack([draws["z1"], draws["z2"]], axis=-1)
    return np.concatenate(
        [np.asarray(draws["mu"])[:, None], np.log(np.asarray(draws["tau"]))[:, None],
         np.asarray(draws["theta"])], axis=1)  # fmt: skip


def reference(name, args):
    if name == "banana":
        k1, k2 = jax.random.split(jax.random.key(99))
        z1 = 2.0 * jax.random.normal(k1, (200_000,))
        z2 = 0.25 * (z1**2 - 4.0) + 0.5 * jax.random.normal(k2, (200_000,))
        return np.stack([z1, z2], axis=-1), 0.0
    model = numpyro.handlers.reparam(eight_schools, config={"theta": LocScaleReparam(0)})
    mcmc = MCMC(NUTS(model), num_warmup=args.ref_warmup, num_samples=args.ref_draws,
                num_chains=4, chain_method="vectorized", progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.key(123))
    return _features(name, mcmc.get_samples()), None


def guides(model, dim):
    flow = fl.models.iaf(dim, 3, (32, 32), elementwise_affine=True)
    spline = fl.models.iaf(dim, 3, (32, 32), transformer="spline", elementwise_affine=True)
    return {
        "AutoNormal": lambda: AutoNormal(model),
        "AutoMultivariateNormal": lambda: AutoMultivariateNormal(model),
        "flow_guide (affine IAF 3 x 32)": lambda: fl.interop.flow_guide(flow, model),
        "flow_guide (spline IAF 3 x 32)": lambda: fl.interop.flow_guide(spline, model),
    }


def row(name, model, label, make_guide, ref, log_z, args):
    guide = make_guide()
    optimizer = optax.adam(optax.cosine_decay_schedule(args.lr, args.steps))
    svi = SVI(model, guide, numpyro.optim.optax_to_numpyro(optimizer),
              Trace_ELBO(num_particles=args.particles))  # fmt: skip
    start = time.perf_counter()
    result = svi.run(jax.random.key(args.seed), args.steps, progress_bar=False)
    jax.block_until_ready(result.params)
    seconds = time.perf_counter() - start
    elbo = -float(Trace_ELBO(num_particles=20_000).loss(jax.random.key(1), result.params, model,
                                                         guide))  # fmt: skip
    draws = guide.sample_posterior(jax.random.key(2), result.params, sample_shape=(20_000,))
    feats = _features(name, draws)
    ref_mean, ref_sd = ref.mean(0), ref.std(0)
    out = {"model": name, "guide": label, "ELBO": elbo,
           "mean err / sd": float(np.max(np.abs(feats.mean(0) - ref_mean) / ref_sd)),
           "sd err": float(np.max(np.abs(feats.std(0) / ref_sd - 1.0))),
           "SVI s (with compile)": round(seconds, 1)}  # fmt: skip
    if log_z is not None:
        out["KL(q||p)"] = log_z - elbo
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--ref-warmup", type=int, default=2000)
    parser.add_argument("--ref-draws", type=int, default=10000)
    parser.add_argument("--models", default="banana,eight_schools")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    info = device_info()
    print(f"device: {info['platform']} ({info['device']}) x{info['num_devices']}, jax {info['jax']}")
    print(f"load average at start: {load_average()}")
    models = {"banana": (banana, 2), "eight_schools": (eight_schools, 10)}
    rows = []
    for name in args.models.split(","):
        model, dim = models[name]
        ref, log_z = reference(name, args)
        for label, make_guide in guides(model, dim).items():
            rows.append(row(name, model, label, make_guide, ref, log_z, args))
            print(rows[-1])
    print(f"{args.steps} SVI steps, Trace_ELBO({args.particles}), Adam cosine from {args.lr}; "
          "ELBO from 20,000 particles; moments of 20,000 guide draws vs the reference")  # fmt: skip
    print_table(rows, ["model", "guide", "ELBO", "KL(q||p)", "mean err / sd", "sd err",
                       "SVI s (with compile)"])  # fmt: skip
    print(f"wrote {write_results('svi_flow_guide', rows, {'args': vars(args), **info})}")


if __name__ == "__main__":
    main()
