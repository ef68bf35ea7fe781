"""Every public transform factory with an example event: the conformance registry.

Add a case here for each new factory in ``fl.transforms``; ``test_registry_covers_all_factories``
fails when a public factory has no case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flowjax_lab as fl

T = fl.transforms


class Case(NamedTuple):
    factory: str  # the public name in fl.transforms this case covers
    make: Callable[[], fl.Transform]
    event_shape: tuple[int, ...] = (4,)
    context_dim: int = 0
    sample_x: Callable | None = None  # draws inputs from the layer's domain
    sample_z: Callable | None = None
    tol32: float | None = None  # atol = rtol overrides in float32
    tol64: float | None = None


CASES: dict[str, Case] = {
    # permutation
    "reverse_permutation": Case("reverse_permutation", T.reverse_permutation),
    "random_permutation": Case("random_permutation", T.random_permutation, (5,)),
    "permute": Case("permute", lambda: T.permute([2, 0, 3, 1])),
    # elementwise
    "affine": Case("affine", T.affine),
    "affine_image": Case("affine", T.affine, (3, 2, 2)),
    "actnorm": Case("actnorm", T.actnorm),
    "actnorm_image": Case("actnorm", T.actnorm, (3, 3, 2)),
    # linear
    "linear": Case("linear", T.linear),
    "triangular_lower": Case("triangular", T.triangular),
    "triangular_upper": Case("triangular", lambda: T.triangular(lower=False), (5,)),
    "lu_linear": Case("lu_linear", T.lu_linear, (6,)),
    "lu_linear_permuted": Case("lu_linear", lambda: T.lu_linear([3, 1, 0, 2])),
    "qr_linear": Case("qr_linear", T.qr_linear, (5,)),
    "qr_linear_2_reflections": Case("qr_linear", lambda: T.qr_linear(2)),
    # image
    "conv1x1_lu": Case("conv1x1", T.conv1x1, (3, 2, 4)),
    "conv1x1_full": Case("conv1x1", lambda: T.conv1x1(lu=False), (2, 3, 3)),
    # combinators over layers
    "chain_linear": Case(
        "chain", lambda: fl.chain(T.lu_linear(), T.affine(), T.random_permutation())
    ),
    "stack_linear": Case("stack", lambda: fl.stack(fl.chain(T.qr_linear(), T.actnorm()), 3)),
    "invert_lu": Case("invert", lambda: fl.invert(T.lu_linear())),
}
