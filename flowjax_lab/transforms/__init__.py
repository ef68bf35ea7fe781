"""Layers: every public factory returns a ``fl.Transform``; one file per family."""

from flowjax_lab.transforms.autoregressive import iaf, maf
from flowjax_lab.transforms.coupling import affine_coupling, spline_coupling
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
from flowjax_lab.transforms.multiscale import multiscale
from flowjax_lab.transforms.permutation import permute, random_permutation, reverse_permutation
from flowjax_lab.transforms.planar import planar, radial
from flowjax_lab.transforms.spline import spline

__all__ = [
    "actnorm",
    "affine",
    "affine_coupling",
    "conv1x1",
    "emerging_conv",
    "fixed_affine",
    "iaf",
    "image_affine_coupling",
    "image_spline_coupling",
    "linear",
    "logit",
    "lu_linear",
    "maf",
    "multiscale",
    "permute",
    "planar",
    "qr_linear",
    "radial",
    "random_permutation",
    "reverse_permutation",
    "sigmoid",
    "spline",
    "spline_coupling",
    "squeeze",
    "triangular",
    "unsqueeze",
]
