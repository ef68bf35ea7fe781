"""Data sets for flowjax_lab: 2-D toys, Gaussian mixtures, digits, MNIST (also binarised),
splits and checks.

Every sampler takes a `jax.random` key first (new-style `jax.random.key` or legacy
`jax.random.PRNGKey`). Only core (keys) and objectives (bits_per_dim) come from the rest of
flowjax_lab.
"""

from flowjax_lab.core import as_key
from flowjax_lab.data.binarized import (
    BINARIZATION_SEED,
    BinarizedData,
    binarize,
    check_binary,
    check_intensities,
    fixed_binarization,
    load_binarized_digits,
    load_binarized_mnist,
)
from flowjax_lab.data.checks import check_data
from flowjax_lab.data.digits import (
    DIGITS_DIM,
    DIGITS_NUM_LEVELS,
    DigitsData,
    dequantize,
    inverse_logit_transform,
    load_digits,
    logit_logdet,
    logit_transform,
)
from flowjax_lab.data.mixtures import (
    Gaussian,
    GaussianMixture,
    correlated_gaussian,
    gaussian_entropy,
    gaussian_mixture,
)
from flowjax_lab.data.mnist import (
    MNIST_DIM,
    MNIST_NUM_LEVELS,
    MNIST_SHAPE,
    MnistPixels,
    load_mnist_pixels,
    mnist_path,
)
from flowjax_lab.data.splits import (
    DataSplit,
    Standardizer,
    fit_standardizer,
    standardize,
    standardize_logdet,
    train_val_test_split,
    unstandardize,
)
from flowjax_lab.data.toy2d import (
    TOY_2D,
    TOY_2D_LOG_PROB,
    checkerboard,
    checkerboard_log_prob,
    eight_gaussians,
    eight_gaussians_log_prob,
    pinwheel,
    rings,
    rings_log_prob,
    two_moons,
    two_spirals,
)
from flowjax_lab.objectives import bits_per_dim  # one definition, re-exported here

__all__ = [
    "BINARIZATION_SEED",
    "BinarizedData",
    "binarize",
    "check_binary",
    "check_intensities",
    "fixed_binarization",
    "load_binarized_digits",
    "load_binarized_mnist",
    "DIGITS_DIM",
    "DIGITS_NUM_LEVELS",
    "TOY_2D",
    "TOY_2D_LOG_PROB",
    "DataSplit",
    "DigitsData",
    "Gaussian",
    "MNIST_DIM",
    "MNIST_NUM_LEVELS",
    "MNIST_SHAPE",
    "MnistPixels",
    "GaussianMixture",
    "Standardizer",
    "as_key",
    "bits_per_dim",
    "check_data",
    "checkerboard",
    "checkerboard_log_prob",
    "correlated_gaussian",
    "dequantize",
    "eight_gaussians",
    "eight_gaussians_log_prob",
    "fit_standardizer",
    "gaussian_entropy",
    "gaussian_mixture",
    "inverse_logit_transform",
    "load_digits",
    "logit_logdet",
    "logit_transform",
    "load_mnist_pixels",
    "mnist_path",
    "pinwheel",
    "rings",
    "rings_log_prob",
    "standardize",
    "standardize_logdet",
    "train_val_test_split",
    "two_moons",
    "two_spirals",
    "unstandardize",
]
