"""Ready-made vector flows (events of shape (dim,)). Each is ``make_flow(stack(step, num_layers))``: compile time is flat in depth.

A step is ``layer -> [affine] -> [lu_linear] -> permutation``; the permutation between layers is
the reverse by default (``permutation="random"`` draws one per layer from the init key;
``None`` leaves it out). ``mixing="lu"`` adds a learned ``lu_linear`` mixing layer per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import distrax
import jax.numpy as jnp

from flowjax_lab import bases
from flowjax_lab import transforms as T
from flowjax_lab.checks import positive_int
from flowjax_lab.core import Transform, chain, stack
from flowjax_lab.flow import Flow, make_flow, standard_normal

_PERMUTATIONS = {
    "reverse": T.reverse_permutation,
    "random": T.random_permutation,
    None: None,
}


def _check_common(dim: int, num_layers: int, permutation, mixing) -> None:
    positive_int(dim, "dim")
    positive_int(num_layers, "num_layers")
    if permutation not in _PERMUTATIONS:
        raise ValueError(f"permutation must be one of {list(_PERMUTATIONS)}, got {permutation!r}")
    if mixing not in (None, "lu"):
        raise ValueError(f"mixing must be None or 'lu', got {mixing!r}")


BASES = ("normal", "diagonal_normal", "student_t", "gaussian_mixture")


def make_base(base, dim: int):
    """The base of a vector model: None or ``"normal"`` (fixed N(0, I)), ``"diagonal_normal"``,
    ``"student_t"`` or ``"gaussian_mixture"`` (4 components; trainable, ``fl.bases``; the params
    become ``{"transform", "base"}``),
    or a distrax distribution / `TrainableBase` as it is."""
    if base is None or base == "normal":
        return standard_normal((dim,))
    if isinstance(base, str):
        if base == "diagonal_normal":
            return bases.diagonal_normal((dim,))
        if base == "student_t":
            return bases.student_t((dim,))
        if base == "gaussian_mixture":
            return bases.gaussian_mixture((dim,))
        raise ValueError(f"base must be one of {list(BASES)} or a distribution, got {base!r}")
    if tuple(base.event_shape) != (dim,):
        raise ValueError(f"base has event shape {tuple(base.event_shape)}, expected {(dim,)}")
    return base


def flow_of_steps(
    layer: Transform,
    dim: int,
    num_layers: int,
    *,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    elementwise_affine: bool = False,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """``num_layers`` scanned copies of ``layer -> [affine] -> [actnorm] -> [lu_linear] ->
    permutation``, on the ``base`` (`make_base`: None for N(0, I)). ``actnorm`` stands in for
    the batch norm that the MAF and RealNVP papers put between layers: a per-dimension scale
    and shift set by ``fl.data_init`` so that each layer's output starts standardised on the
    first batch (the CLI always initialises that way), then trained as ordinary params (no batch statistics; one event at a time, as every transform)."""
    _check_common(dim, num_layers, permutation, mixing)
    parts = [layer]
    if elementwise_affine:
        parts.append(T.affine())
    if actnorm:
        parts.append(T.actnorm())
    if mixing == "lu":
        parts.append(T.lu_linear())
    if permutation is not None and dim > 1:
        parts.append(_PERMUTATIONS[permutation]())
    step = parts[0] if len(parts) == 1 else chain(*parts)
    return make_flow(stack(step, num_layers), make_base(base, dim))


def _autoregressive(
    layer_factory,
    dim,
    num_layers,
    hidden,
    transformer,
    bins,
    bound,
    context_dim,
    permutation,
    mixing,
    elementwise_affine,
    actnorm,
    base=None,
) -> Flow:
    """The flow of steps shared by `maf`, `iaf` and autoregressive `nsf` (``layer_factory`` is
    T.maf or T.iaf)."""
    layer = layer_factory(
        hidden=tuple(hidden),
        transformer=transformer,
        bins=bins,
        bound=bound,
        context_dim=context_dim,
    )
    return flow_of_steps(
        layer,
        dim,
        num_layers,
        permutation=permutation,
        mixing=mixing,
        elementwise_affine=elementwise_affine,
        actnorm=actnorm,
        base=base,
    )


def maf(
    dim: int,
    num_layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    *,
    transformer: str | T.Transformer = "affine",
    bins: int = 8,
    bound: float = 3.0,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    elementwise_affine: bool = False,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017): one-pass density, d-pass sampling.

    ``transformer``: ``"affine"``, ``"spline"`` (``bins`` on [-``bound``, ``bound``]) or any
    `Transformer` value (``T.sos_transformer``, ``T.dsf_transformer``, your own). ``base`` (every
    vector model): None (N(0, I)), ``"diagonal_normal"``, ``"student_t"`` (trainable, with
    learned degrees of freedom, for heavy-tailed data) or a distribution (`make_base`).

    Example:
        >>> flow = maf(dim=8, num_layers=5, hidden=(128, 128))
        >>> params = flow.init(jax.random.key(0))
    """
    return _autoregressive(
        T.maf, dim, num_layers, hidden, transformer, bins, bound, context_dim, permutation,
        mixing, elementwise_affine, actnorm, base,
    )  # fmt: skip


def iaf(
    dim: int,
    num_layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    *,
    transformer: str | T.Transformer = "affine",
    bins: int = 8,
    bound: float = 3.0,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    elementwise_affine: bool = False,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016): one-pass sampling and sample log-prob,
    d-pass density of given data. The model to pick for reverse KL: ``transformer="spline"``
    with ``elementwise_affine=True``, trained with ``objective="reverse_kl_stl"`` on ~1,024
    samples per step, had median ESS/n 0.95-1.0 on U1, banana, funnel and a mixture in
    ``benchmarks/fit_quality.py`` (3 seeds)."""
    return _autoregressive(
        T.iaf, dim, num_layers, hidden, transformer, bins, bound, context_dim, permutation,
        mixing, elementwise_affine, actnorm, base,
    )  # fmt: skip


def _maf_of(transformer, dim, num_layers, hidden, context_dim, permutation, mixing, actnorm,
            base) -> Flow:
    """`maf` with a monotone ``transformer`` (naf, sospf, bpf): no elementwise affine."""
    return maf(dim, num_layers, hidden, transformer=transformer, context_dim=context_dim,
               permutation=permutation, mixing=mixing, actnorm=actnorm, base=base)  # fmt: skip


def naf(
    dim: int,
    num_layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    units: int = 8,
    *,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """Neural autoregressive flow (Huang et al. 2018): MADE conditioners and the deep sigmoidal
    transformer (``T.dsf_transformer(units)``, M = ``units`` sigmoids per dimension).

    Density: one MADE pass per layer; sampling: d sequential numerical solves per layer
    (bisection + Newton, implicit gradients), so use it for density estimation.
    """
    return _maf_of(T.dsf_transformer(units), dim, num_layers, hidden,
                   context_dim, permutation, mixing, actnorm, base)  # fmt: skip


def sospf(
    dim: int,
    num_layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    degree: int = 2,
    terms: int = 2,
    *,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """Sum-of-squares polynomial flow (Jaini et al. 2019): MADE conditioners and the SOS
    transformer (``T.sos_transformer(degree, terms)``: increasing polynomials of degree
    2 ``degree`` + 1). Density one pass per layer; sampling d numerical solves per layer.
    """
    return _maf_of(T.sos_transformer(degree, terms), dim, num_layers, hidden,
                   context_dim, permutation, mixing, actnorm, base)  # fmt: skip


def bpf(
    dim: int,
    num_layers: int = 5,
    hidden: Sequence[int] = (128, 128),
    degree: int = 8,
    bound: float = 4.0,
    *,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """Bernstein-polynomial flow: MADE conditioners and ``T.bernstein_transformer(degree,
    bound)`` (increasing polynomials on [-bound, bound], linear tails). Density one pass per
    layer; sampling d numerical solves per layer."""
    return _maf_of(T.bernstein_transformer(degree, bound), dim, num_layers, hidden,
                   context_dim, permutation, mixing, actnorm, base)  # fmt: skip


def bnaf(
    dim: int,
    num_layers: int = 1,
    hidden_factor: int = 8,
    depth: int = 2,
    *,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    base=None,
) -> Flow:
    """Block neural autoregressive flow (De Cao et al. 2019): ``num_layers`` `T.bnaf` layers
    (``depth`` hidden layers of d * ``hidden_factor`` units each), a permutation between them.
    Density one pass per layer; sampling d sequential numerical solves per layer."""
    layer = T.bnaf(hidden_factor, depth, context_dim)
    return flow_of_steps(layer, dim, num_layers, permutation=permutation, base=base)


def ncsf(
    dim: int, num_layers: int = 4, hidden: Sequence[int] = (64, 64), bins: int = 8, *,
    context_dim: int = 0,
) -> Flow:  # fmt: skip
    """Neural circular spline flow on the torus [-pi, pi)^d (Rezende et al. 2020), d >= 2.

    ``num_layers`` couplings with ``T.circular_spline_transformer(bins)`` whose conditioners see
    [cos x_A, sin x_A], a reverse permutation between them, on the uniform base over
    [-pi, pi)^d: every layer is a diffeomorphism of the torus, so the density is periodic.
    One pass both ways; data are angles (read modulo 2 pi)."""
    layer = T.coupling(T.circular_spline_transformer(bins), tuple(hidden),
                       context_dim=context_dim, features=T.angle_features)  # fmt: skip
    return flow_of_steps(layer, dim, num_layers, base=_uniform_angles(dim))


def _uniform_angles(dim: int) -> distrax.Distribution:
    """The uniform distribution on [-pi, pi)^d, the base of `ncsf`."""
    half = jnp.full((positive_int(dim, "ncsf: dim"),), math.pi)
    return distrax.Independent(distrax.Uniform(-half, half), 1)


def realnvp(
    dim: int,
    num_layers: int = 8,
    hidden: Sequence[int] = (128, 128),
    *,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """RealNVP (Dinh et al. 2017): affine coupling layers, one pass both ways."""
    layer = T.affine_coupling(hidden=tuple(hidden), context_dim=context_dim)
    return flow_of_steps(
        layer, dim, num_layers, permutation=permutation, mixing=mixing, actnorm=actnorm, base=base
    )


def nsf(
    dim: int,
    num_layers: int = 8,
    hidden: Sequence[int] = (128, 128),
    bins: int = 8,
    *,
    bound: float = 4.0,
    autoregressive: bool = False,
    context_dim: int = 0,
    permutation: str | None = "reverse",
    mixing: str | None = None,
    elementwise_affine: bool = True,
    actnorm: bool = False,
    base=None,
) -> Flow:
    """Neural spline flow (Durkan et al. 2019): rational-quadratic splines on [-bound, bound].

    ``autoregressive=True`` uses MADE conditioners (one-pass density, d-pass sampling); False
    uses coupling (one pass both ways). ``elementwise_affine`` (default on) adds a learned
    per-dimension scale and shift to each step, so data or targets wider than the spline's
    interval are still reached (outside it the spline is the identity).
    """
    if autoregressive:
        return _autoregressive(
            T.maf, dim, num_layers, hidden, "spline", bins, bound, context_dim, permutation,
            mixing, elementwise_affine, actnorm, base,
        )  # fmt: skip
    layer = T.spline_coupling(hidden=tuple(hidden), bins=bins, bound=bound, context_dim=context_dim)
    return flow_of_steps(
        layer,
        dim,
        num_layers,
        permutation=permutation,
        mixing=mixing,
        elementwise_affine=elementwise_affine,
        actnorm=actnorm,
        base=base,
    )


def planar_flow(
    dim: int, num_layers: int = 16, *, elementwise_affine: bool = True, base=None
) -> Flow:
    """Planar flow (Rezende and Mohamed 2015): closed-form sampling and sample log-prob; the
    density of given data needs a scalar root-find per layer. ``base``: as `maf`'s."""
    return flow_of_steps(
        T.planar(), dim, num_layers, permutation=None, elementwise_affine=elementwise_affine,
        base=base,
    )


def sylvester_flow(
    dim: int,
    num_layers: int = 8,
    *,
    kind: str = "orthogonal",
    num_vectors: int | None = None,
    elementwise_affine: bool = True,
    base=None,
) -> Flow:
    """Sylvester flow (van den Berg et al. 2018): ``num_layers`` copies of
    ``transforms.sylvester(kind, num_vectors) -> [affine]``, a reverse permutation between
    layers for ``kind="triangular"`` (whose Q is the identity). Sampling and the log-prob of
    samples are one pass per layer; the density of given data solves M scalar equations in
    sequence per layer. ``base``: as `maf`'s."""
    if num_vectors is not None:
        positive_int(num_vectors, "sylvester_flow: num_vectors", maximum=positive_int(dim, "dim"))
    layer = T.sylvester(kind, num_vectors)
    return flow_of_steps(
        layer, dim, num_layers, permutation="reverse" if kind == "triangular" else None,
        elementwise_affine=elementwise_affine, base=base,
    )  # fmt: skip


def linear_flow(dim: int, num_layers: int = 1, *, base=None) -> Flow:
    """A Gaussian baseline: ``num_layers`` copies of lu_linear -> affine (x = L U z + b: any
    full-covariance Gaussian on a normal base; a heavier-tailed one on ``base="student_t"``).
    O(d^2) per layer, exact inverse by triangular solves."""
    return make_flow(stack(chain(T.lu_linear(), T.affine()), num_layers), make_base(base, dim))


def cnf(
    dim: int,
    hidden: Sequence[int] = (64, 64),
    *,
    activation: str = "tanh",
    context_dim: int = 0,
    solver=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int | None = None,
    adjoint: str = "recursive_checkpoint",
    max_steps: int = 4096,
    on_failure: str = "raise",
    base=None,
) -> Flow:
    """A continuous normalizing flow (FFJORD-style, exact trace): one ODE dz/dt = v(z, t) with a
    time-conditioned MLP field ``hidden`` wide, solved by diffrax (`transforms.cnf` for the math
    and every option). Density and sampling are one adaptive solve each, every field evaluation
    costing one MLP pass and d jvps. A Flow's functions take no key, so the model uses the exact
    trace; RNODE's regulariser is ``fl.fit``'s objective ``{"mle": 1.0, "rnode": w}``; for
    Hutchinson's estimator train ``T.cnf(...)`` with ``T.rnode_loss`` in your own loop. ``base``: as `maf`'s. Needs ``flowjax_lab[cnf]``.

    Example:
        >>> flow = cnf(dim=2, hidden=(32, 32))
        >>> params = flow.init(jax.random.key(0))
    """
    positive_int(dim, "dim")
    layer = T.cnf(hidden, activation=activation, context_dim=context_dim, solver=solver,
                  rtol=rtol, atol=atol, steps=steps, adjoint=adjoint, max_steps=max_steps,
                  on_failure=on_failure)  # fmt: skip
    return make_flow(layer, make_base(base, dim))


__all__ = [
    "bnaf",
    "bpf",
    "cnf",
    "flow_of_steps",
    "iaf",
    "linear_flow",
    "maf",
    "naf",
    "ncsf",
    "nsf",
    "planar_flow",
    "realnvp",
    "sospf",
    "sylvester_flow",
]
