import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests import the registry

# The tests' programs are small and compile-bound: XLA's backend optimisation passes cost most
# of the compile time and buy little at these sizes (measured on 2 cores: test_models.py and
# test_vae.py together 121 s -> 78 s). Set before any JAX backend starts; subprocesses inherit
# it; flags already in XLA_FLAGS come later and win.
_FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{_FAST_COMPILE_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()

# Tests that take tens of seconds run first, so that with `-n 2` both workers start on them and
# the run does not end with one worker finishing a long test while the other idles.
LONG_FIRST = (
    "_in_own_process",
    "test_model_conformance_float32",
    "test_tiny_glow_run",
    "test_fit_iwae_dreg",
    "test_gradients_are_finite_for_every_variant",
    "test_maf_reaches_entropy",
)


def _rank(item) -> int:
    return next((i for i, name in enumerate(LONG_FIRST) if name in item.nodeid), len(LONG_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)  # stable: collection order within each rank
