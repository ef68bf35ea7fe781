"""Data parallelism on ``jax.sharding``: meshes, batch shardings and sharded evaluation.

Everything here is a thin layer over JAX's own runtime: a ``Mesh`` with a "data" axis (and a
"model" axis, size 1 unless asked for), ``NamedSharding`` s, global arrays built from each
process's own rows with ``jax.make_array_from_process_local_data``, and ``jax.jit`` with output
shardings. XLA inserts the collectives (the gradient all-reduce of a data-parallel step, the
gather of a sharded evaluation); there is no communication code of ours.

A batch of n rows on a mesh with D data devices puts rows [i n / D, (i + 1) n / D) on device i;
params are replicated. Multi-host: call ``fl.distributed.initialize`` first in every process;
the mesh then spans all processes' devices and each process feeds only the rows its own devices
hold (see ``global_rows``).

Example (4 devices: run with XLA_FLAGS=--xla_force_host_platform_device_count=4 on a CPU):
  >>> mesh = fl.sharding.make_mesh()                  # all devices, axes ("data", "model")
  >>> lp = fl.sharding.sharded_log_prob(flow, params, x, mesh)     # numpy (n,)
  >>> iwae = fl.sharding.sharded_batch_eval(per_row_bound, mesh)   # fn(params, x, key) -> (n,)
  >>> bounds = iwae(params, x, key)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from flowjax_lab.checks import positive_int

DATA, MODEL = "data", "model"

__all__ = [
    "DATA",
    "MODEL",
    "as_mesh",
    "batch_sharding",
    "check_divisible",
    "data_size",
    "global_rows",
    "make_mesh",
    "replicate",
    "replicated",
    "sharded_batch_eval",
    "sharded_log_prob",
    "sharded_sample",
    "to_host",
    "to_local",
]


def make_mesh(devices: int | Sequence[jax.Device] | None = None, *, model: int = 1) -> Mesh:
    """A ("data", "model") mesh of shape (len(devices) // model, model).

    Args:
      devices: None for every device of every process (``jax.devices()``), an int n for the
        first n of them, or a list of devices.
      model: size of the "model" axis (1: pure data parallelism).
    """
    all_devices = jax.devices()
    if devices is None:
        devices = all_devices
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(all_devices):
            raise ValueError(
                f"devices={devices}: there are {len(all_devices)} devices "
                f"({all_devices[0].platform}); give 1 .. {len(all_devices)} or None for all"
            )
        devices = all_devices[:devices]
    devices = list(devices)
    if positive_int(model, "model") and len(devices) % model:
        raise ValueError(f"model={model!r} must be a positive divisor of {len(devices)} devices")
    shape = (len(devices) // model, model)
    return jax.make_mesh(shape, (DATA, MODEL), (AxisType.Auto,) * 2, devices=devices)


def as_mesh(mesh) -> Mesh | None:
    """None stays None, an int n is ``make_mesh(n)``, a Mesh needs a "data" axis."""
    if mesh is None or isinstance(mesh, Mesh):
        if mesh is not None and DATA not in mesh.axis_names:
            raise ValueError(f"mesh needs a {DATA!r} axis, got axes {mesh.axis_names}")
        return mesh
    if isinstance(mesh, (int, np.integer)) and not isinstance(mesh, bool):
        return make_mesh(int(mesh))
    raise TypeError(f"mesh: expected a jax.sharding.Mesh, a device count or None, got {mesh!r}")


def data_size(mesh: Mesh) -> int:
    """Devices along the "data" axis: the number of pieces a batch is split into."""
    return mesh.shape[DATA]


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Rows (dimension ``axis``) split over the "data" axis, the rest replicated."""
    return NamedSharding(mesh, P(*([None] * axis), DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def check_divisible(n: int, mesh: Mesh, name: str = "batch_size") -> None:
    """ValueError unless ``n`` rows split evenly over the mesh's data devices."""
    d = data_size(mesh)
    if n % d:
        raise ValueError(
            f"{name}={n} is not divisible by the {d} devices of the mesh's {DATA!r} axis: "
            f"use a multiple of {d} (e.g. {max(d, n - n % d)})"
        )


def replicate(tree, mesh: Mesh):
    """Every leaf (host or device array, the same value in every process) copied to all devices.

    Typed random keys stay typed keys. Multi-host: built with
    ``jax.make_array_from_process_local_data`` (each process passes its own full copy).
    """
    sharding = replicated(mesh)

    def put(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=impl)
        if jax.process_count() == 1:
            return jax.device_put(leaf, sharding)
        host = np.asarray(to_host(leaf))
        return jax.make_array_from_process_local_data(sharding, host, host.shape)

    return jax.tree.map(put, tree)


def process_rows(mesh: Mesh, n: int) -> slice:
    """The rows [start, stop) of a global ``n``-row batch that this process's devices hold."""
    index = batch_sharding(mesh).addressable_devices_indices_map((n,))
    starts = [idx[0].start or 0 for idx in index.values()]
    stops = [n if idx[0].stop is None else idx[0].stop for idx in index.values()]
    return slice(min(starts), max(stops))


def global_rows(rows_of, mesh: Mesh, n: int, axis: int = 0) -> jax.Array:
    """A global array split over the data axis along ``axis`` (of global length ``n``).

    ``rows_of(s)`` returns this process's rows (``s``, a slice of range(n), along ``axis``) as
    a host array: each process builds and sends only its own part
    (``jax.make_array_from_process_local_data``).
    """
    local = np.asarray(rows_of(process_rows(mesh, n)))
    shape = (*local.shape[:axis], n, *local.shape[axis + 1 :])
    return jax.make_array_from_process_local_data(batch_sharding(mesh, axis), local, shape)


def to_host(tree):
    """Numpy copies of a tree's leaves; replicated global arrays are read from a local shard."""

    def get(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return jax.device_get(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(get, tree)


def to_local(tree):
    """Replicated arrays spanning other processes as this process's own single-device copy."""

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(get, tree)


def sharded_batch_eval(fn: Callable, mesh: Mesh, batch_argnums: Sequence[int] = (1,)) -> Callable:
    """``fn`` with the rows of its batch arguments split over the mesh's data devices.

    ``fn(*args)`` must be a per-row function: the arguments at ``batch_argnums`` have n rows
    (leading axis) and every output leaf has n rows, with row i depending only on row i of the
    inputs (log densities, per-example ELBO / IWAE bounds drawn from a key, ...). The rows are
    padded to a multiple of the data devices (by repeating row 0), split, the other arguments
    (params, keys) replicated, ``fn`` runs under ``jax.jit`` with row-sharded outputs, and the
    result comes back as numpy with the padding removed. Random draws match an unsharded call
    (``jax_threefry_partitionable``, the default). One compile per input shape.
    """
    batch_argnums = tuple(batch_argnums)
    jitted = jax.jit(fn, out_shardings=batch_sharding(mesh))
    d = data_size(mesh)

    def run(*args):
        n = len(args[batch_argnums[0]])
        pad = -n % d
        placed = []
        for i, a in enumerate(args):
            if i in batch_argnums:
                a = np.asarray(to_host(a))
                if len(a) != n:
                    raise ValueError(f"batch arguments differ in rows: {len(a)} != {n}")
                a = np.concatenate([a, np.repeat(a[:1], pad, 0)]) if pad else a
                a = global_rows(lambda s, a=a: a[s], mesh, n + pad)
            else:
                a = replicate(a, mesh)
            placed.append(a)
        return jax.tree.map(lambda y: y[:n], to_host(jitted(*placed)))

    return run


def sharded_log_prob(flow, params, x, mesh: Mesh, context=None) -> np.ndarray:
    """``flow.log_prob(params, x, context)`` (n,) with the n rows split over the data devices.

    ``context``: None, one vector (c,) (replicated) or one row per event (n, c) (split too).
    """
    argnums = (1, 2) if context is not None and np.ndim(context) == 2 else (1,)
    fn = lambda p, x, c: flow.log_prob(p, x, c)  # noqa: E731
    return sharded_batch_eval(fn, mesh, argnums)(params, x, context)


def sharded_sample(flow, params, key, n: int, mesh: Mesh, context=None) -> np.ndarray:
    """``flow.sample(params, key, n, context)`` with the n samples made on the data devices.

    The samples equal an unsharded ``flow.sample`` (partitionable threefry draws each row from
    its own counter); n is padded to a multiple of the data devices and trimmed.
    """
    n = positive_int(n, "n")
    total = n + (-n % data_size(mesh))
    jitted = jax.jit(
        lambda p, k, c: flow.sample(p, k, total, c), out_shardings=batch_sharding(mesh)
    )
    out = jitted(*replicate((params, key, context), mesh))
    return np.asarray(to_host(out))[:n]
