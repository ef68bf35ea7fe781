"""The loss terms ``fit`` weights, the batch maps applied to each step's rows, validation losses.

A term is ``loss(params, batch, key) -> scalar`` with ``batch`` a `Batch` (rows and context,
None without data) and ``key`` the step's key; a term marked ``counts_evaluations`` returns
``(scalar, field evaluations per row)`` instead (a continuous flow's "mle", `counted_mle`).
A batch map is ``(key, x) -> x``: dynamic binarisation, per-step dequantisation, a fixed
preprocess, or the user's own; `chain_batch_maps` composes them into one, map i drawing from
fold_in(key, i).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flowjax_lab.flow import Flow, base_distribution
from flowjax_lab.objectives import forward_kl, reverse_kl, uniform_dequantize_pixels
from flowjax_lab.training.objective import Objective
from flowjax_lab.transforms.continuous import cnf_solve
from flowjax_lab.vae.model import VAE

VALIDATION_SAMPLES = 8192  # importance samples per VAE validation batch (rows x k): memory bound

BatchMap = Callable[[jax.Array, jax.Array], jax.Array]


class Batch(NamedTuple):
    """One step's data: rows x (b, *event) and per-row context (b, c); None when absent."""

    x: Any = None
    context: Any = None


# --------------------------------------------------------------------------- batch maps


def binarize_dynamic(key, x: jax.Array) -> jax.Array:
    """x ~ Bernoulli(intensities), elementwise, in the dtype of ``x``."""
    return (jax.random.uniform(key, x.shape, x.dtype) < x).astype(x.dtype)


def dequantize_map(num_levels: int) -> BatchMap:
    """``(key, p) -> (p + u) / L``, u ~ U[0, 1): fresh uniform dequantisation of pixel rows."""
    return lambda key, x: uniform_dequantize_pixels(key, x, num_levels)


def fixed_map(fn: Callable) -> BatchMap:
    """A key-free function of the batch as a batch map."""
    return lambda key, x: fn(x)


def chain_batch_maps(*maps: BatchMap) -> BatchMap | None:
    """One batch map running ``maps`` in order, map i on key fold_in(key, i); None if none."""
    if not maps:
        return None

    def chained(key, x):
        for i, fn in enumerate(maps):
            x = fn(jax.random.fold_in(key, i), x)
        return x

    return chained


def batch_maps(*, binarize=None, dequantize=None, preprocess=None, extra: Sequence = ()) -> tuple:
    """``fit``'s batch-map keywords (sugar) as a tuple of maps, followed by ``extra``."""
    maps = []
    if binarize == "dynamic":
        maps.append(binarize_dynamic)
    if dequantize is not None:
        maps.append(dequantize_map(dequantize))
    if preprocess is not None:
        maps.append(fixed_map(preprocess))
    return (*maps, *extra)


# --------------------------------------------------------------------------- loss terms


def rnode_penalty(flow: Flow) -> Callable:
    """``loss(params, batch, key)``: RNODE's regulariser (Finlay et al. 2020) on the batch rows,
    mean_i [int ||v||^2 dt + int ||dv/dz||_F^2 dt] along the path of x_i (one more adaptive
    solve per row per step, beside the "mle" term's). For a flow made by ``fl.models.cnf``."""
    t = flow.transform
    if getattr(t.apply, "_cnf_solve", None) is None:
        raise ValueError(
            "objective 'rnode' (RNODE's kinetic + Jacobian-Frobenius penalty) needs a continuous "
            "flow made by fl.models.cnf; this flow's transform is not a "
            "fl.transforms.cnf"
        )

    def loss(p, batch, key):
        del key
        ctx = batch.context
        one = lambda x, c: cnf_solve(t, p, x, context=c)  # noqa: E731
        s = jax.vmap(one, (0, None if ctx is None else 0))(batch.x, ctx)
        return jnp.mean(s.kinetic + s.frobenius)

    return loss


def counted_mle(flow: Flow) -> Callable | None:
    """For a flow made by ``fl.models.cnf``: ``loss(params, batch, key) -> (NLL, NFE)``, the mean
    negative log-likelihood of the rows (the same solve as ``flow.log_prob``) and the mean number
    of vector-field evaluations of their solves (`transforms.CNFSolution`); None for other flows.
    Row i's solve gets key split(key, b)[i]: a flow of ``T.cnf(trace="hutchinson")`` draws its
    probes from the step's key (the exact trace ignores it).
    """
    counted = getattr(flow.transform.apply, "_cnf_counted", None)
    if counted is None:
        return None

    def loss(p, batch, key):
        ctx, keys = batch.context, jax.random.split(key, batch.x.shape[0])
        one = lambda x, c, k: counted(p, x, c, k)  # noqa: E731
        z, logdet, nfe = jax.vmap(one, (0, None if ctx is None else 0, 0))(batch.x, ctx, keys)
        log_p = base_distribution(flow, p).log_prob(z) + logdet
        return -jnp.mean(log_p), jnp.mean(nfe)

    loss.counts_evaluations = True
    return loss


def flow_terms(flow: Flow, target_log_prob, n: int, context=None, sharding=None) -> dict:
    """{"mle", "reverse_kl", "reverse_kl_stl", "rnode"} terms of a flow ("rnode" built only
    when asked for: it needs a continuous flow, whose "mle" also counts its field evaluations).

    Reverse KL draws ``n`` base samples per step with one ``context`` vector; ``sharding``
    (the mesh's batch sharding, or None) splits those samples over the data devices, so each
    device draws and maps only its share.
    """

    def reverse(stl: bool):
        loss = reverse_kl(flow, target_log_prob, stl, sharding=sharding)
        return lambda p, batch, key: loss(p, key, n, context)

    mle = counted_mle(flow) or (lambda p, batch, key: forward_kl(flow)(p, batch.x, batch.context))
    return {
        "mle": mle,
        "reverse_kl": reverse(False),
        "reverse_kl_stl": reverse(True),
    }


def _flow_terms_used(flow, objective, target_log_prob, n, context, sharding) -> dict:
    terms = flow_terms(flow, target_log_prob, n, context, sharding)
    if "rnode" in objective.used:
        terms["rnode"] = rnode_penalty(flow)
    return terms


def vae_terms(model: VAE, samples: dict) -> dict:
    """{"elbo", "iwae", "iwae_dreg"} terms of a VAE: minus the mean bound over the rows."""

    def iwae(name: str, estimator: str = "plain"):
        k = samples.get(name, 1)
        return lambda p, batch, key: -jnp.mean(model.iwae(p, batch.x, key, k, estimator))

    return {
        "elbo": lambda p, batch, key: -jnp.mean(model.elbo(p, batch.x, key)),
        "iwae": iwae("iwae"),
        "iwae_dreg": iwae("iwae_dreg", "dreg"),
    }


def term_losses(model, objective: Objective, target_log_prob, n: int, context, sharding):
    """The terms of ``model`` (a flow or a VAE), restricted to the objective's."""
    if isinstance(model, VAE):
        terms = vae_terms(model, objective.samples)
    else:
        terms = _flow_terms_used(model, objective, target_log_prob, n, context, sharding)
    return {t: terms[t] for t in objective.used}


# --------------------------------------------------------------------------- validation


def validation_bound(model: VAE, samples: dict, key) -> Callable:
    """``loss(params, x, ctx) -> scalar``: minus the mean validation bound, at a fixed key.

    The bound is the objective's: IWAE-k with the largest k among its IWAE terms, else the
    ELBO. The rows run in batches of max(1, 8192 // k) under ``lax.map`` (memory bounded);
    batch b uses fold_in(key, b), the same at every validation, so changes are the params'.
    """
    k = max(samples.values(), default=0)

    def bound(p, x, kb):
        return model.iwae(p, x, kb, k) if k else model.elbo(p, x, kb)

    def loss(p, x, c):
        del c
        n = x.shape[0]
        b = max(1, min(n, VALIDATION_SAMPLES // max(k, 1)))
        m = -(-n // b)
        if m * b > n:
            x = jnp.concatenate([x, jnp.repeat(x[:1], m * b - n, axis=0)])
        xs = x.reshape(m, b, *x.shape[1:])
        values = jax.lax.map(
            lambda a: bound(p, a[0], jax.random.fold_in(key, a[1])), (xs, jnp.arange(m))
        )
        return -jnp.mean(values.reshape(-1)[:n])

    return loss


VALIDATION_KEY = 0x5A11D  # fold_in(fit key, VALIDATION_KEY): a VAE's fixed validation draws


def validation_loss(model, objective: Objective, key) -> Callable:
    """``loss(params, x, ctx)``: the mean NLL of a flow, minus the validation bound of a VAE."""
    if isinstance(model, VAE):
        return validation_bound(model, objective.samples, jax.random.fold_in(key, VALIDATION_KEY))
    return lambda p, x, c: forward_kl(model)(p, x, c)
