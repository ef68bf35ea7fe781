"""Ready-made flows: vector models in `models.vector`, image models (Glow) in `models.image`.

Every factory returns a ``fl.Flow`` and is reached as ``fl.models.<name>``.
"""

from flowjax_lab.models.image import glow, glow_step
from flowjax_lab.models.vector import (
    bnaf,
    bpf,
    cnf,
    flow_of_steps,
    iaf,
    linear_flow,
    maf,
    naf,
    ncsf,
    nsf,
    planar_flow,
    realnvp,
    sospf,
    sylvester_flow,
)

__all__ = [
    "cnf",
    "flow_of_steps",
    "glow",
    "glow_step",
    "iaf",
    "linear_flow",
    "bnaf",
    "bpf",
    "maf",
    "naf",
    "ncsf",
    "nsf",
    "planar_flow",
    "realnvp",
    "sospf",
    "sylvester_flow",
]
