"""Layers: every public factory returns a ``fl.Transform``; one file per family."""

from flowjax_lab.transforms.autoregressive import iaf, maf
from flowjax_lab.transforms.bnaf import bnaf
from flowjax_lab.transforms.circular import angle_features, circular_spline_transformer, wrap_angle
from flowjax_lab.transforms.continuous import (
    CNFSolution,
    TimeMLP,
    cnf,
    cnf_solve,
    rnode_loss,
)
from flowjax_lab.transforms.coupling import affine_coupling, coupling, spline_coupling
from flowjax_lab.transforms.elementwise import actnorm, affine, fixed_affine, logit, sigmoid
from flowjax_lab.transforms.emerging import emerging_conv
from flowjax_lab.transforms.image import (
    conv1x1,
    image_affine_coupling,
    image_spline_coupling,
    squeeze,
    unsqueeze,
)
from flowjax_lab.transforms.linear import linear, lu_linear, qr_linear, triangular
from flowjax_lab.transforms.monotone import (
    bernstein_transformer,
    dsf_transformer,
    sos_transformer,
    umnn_transformer,
)
from flowjax_lab.transforms.multiscale import multiscale
from flowjax_lab.transforms.numerical import (
    RootResult,
    SolverOptions,
    numerical_inverse,
    numerical_transformer,
    solve_monotone,
)
from flowjax_lab.transforms.permutation import permute, random_permutation, reverse_permutation
from flowjax_lab.transforms.planar import planar, radial
from flowjax_lab.transforms.spline import Transformer, spline
from flowjax_lab.transforms.supports import exp, power, softplus, tanh, to_interval
from flowjax_lab.transforms.sylvester import householder, sylvester

# Exported beside the factories: the Transformer type, the root solver and its result/options
# types, the angle helpers, the CNF's solution type, default field, solver and loss (not
# factories, so they have no conformance case).
NOT_FACTORIES = (
    "CNFSolution", "RootResult", "SolverOptions", "TimeMLP", "Transformer", "angle_features",
    "cnf_solve", "rnode_loss", "solve_monotone", "wrap_angle",
)  # fmt: skip
__all__ = [
    "CNFSolution",
    "RootResult",
    "TimeMLP",
    "cnf_solve",
    "rnode_loss",
    "SolverOptions",
    "Transformer",
    "solve_monotone",
    "actnorm",
    "affine",
    "affine_coupling",
    "angle_features",
    "bernstein_transformer",
    "bnaf",
    "circular_spline_transformer",
    "cnf",
    "conv1x1",
    "coupling",
    "dsf_transformer",
    "emerging_conv",
    "exp",
    "fixed_affine",
    "householder",
    "iaf",
    "image_affine_coupling",
    "image_spline_coupling",
    "linear",
    "logit",
    "lu_linear",
    "maf",
    "multiscale",
    "numerical_inverse",
    "numerical_transformer",
    "permute",
    "planar",
    "power",
    "qr_linear",
    "radial",
    "random_permutation",
    "reverse_permutation",
    "sigmoid",
    "softplus",
    "sos_transformer",
    "spline",
    "spline_coupling",
    "squeeze",
    "sylvester",
    "tanh",
    "to_interval",
    "triangular",
    "umnn_transformer",
    "unsqueeze",
    "wrap_angle",
]
