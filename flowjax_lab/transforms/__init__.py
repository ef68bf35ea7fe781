"""Layers: every public factory returns a ``fl.Transform``; one file per family."""

from flowjax_lab.transforms.elementwise import actnorm, affine
from flowjax_lab.transforms.image import conv1x1
from flowjax_lab.transforms.linear import linear, lu_linear, qr_linear, triangular
from flowjax_lab.transforms.permutation import permute, random_permutation, reverse_permutation

__all__ = [
    "actnorm",
    "affine",
    "conv1x1",
    "linear",
    "lu_linear",
    "permute",
    "qr_linear",
    "random_permutation",
    "reverse_permutation",
    "triangular",
]
