"""The data feed of ``fit``: which rows each step trains on, and how they reach the devices.

Batches depend only on (key, step), so a resumed run sees the same rows as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_lab import sharding
from flowjax_lab.training.checks import FitData
from flowjax_lab.training.step import Feed


class EpochShuffler:
    """Row indices for steps: epoch e is a permutation of range(n) seeded by (key, e).

    Step s uses rows perm_e[i b : (i + 1) b] with e, i = divmod(s, n // b), so batches depend
    only on (key, s). Drawn on the host (numpy, O(n) per epoch, no device sort) and sent to the
    device as a (length, b) int32 array per chunk.
    """

    def __init__(self, key, n: int, batch: int):
        self.seed = [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]
        self.n, self.batch, self.per_epoch = n, batch, max(n // batch, 1)
        self._cache: tuple[int, np.ndarray] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([*self.seed, epoch])
            self._cache = (epoch, rng.permutation(self.n).astype(np.int32))
        return self._cache[1]

    def indices(self, start: int, length: int) -> np.ndarray:
        epochs, i = np.divmod(np.arange(start, start + length), self.per_epoch)
        out = np.empty((length, self.batch), np.int32)
        for epoch in np.unique(epochs):
            batches = self._perm(int(epoch))[: self.per_epoch * self.batch]
            mask = epochs == epoch
            out[mask] = batches.reshape(self.per_epoch, self.batch)[i[mask]]
        return out


def feeder(data: FitData, data_key, length: int) -> Callable[[int], Feed]:
    """``feed(start) -> Feed``: the data of the chunk of ``length`` steps from ``start``.

    One device: the data set goes to the device once and each chunk sends only its
    (length, batch) row indices. On a mesh: each chunk's rows (length, batch, *event) are
    gathered on the host, split over the data axis along the batch dimension, and each process
    sends only its devices' part.
    """
    if data.data is None:
        return lambda start: Feed()
    shuffler = EpochShuffler(data_key, data.data.shape[0], data.batch)
    x, ctx, mesh = data.data, data.ctx_rows, data.mesh
    if mesh is None:
        x, ctx = jnp.asarray(x), None if ctx is None else jnp.asarray(ctx)
        return lambda start: Feed(jnp.asarray(shuffler.indices(start, length)), x, ctx)

    def feed(start):
        idx = shuffler.indices(start, length)
        rows = lambda a: sharding.global_rows(lambda s: a[idx[:, s]], mesh, data.batch, 1)  # noqa: E731
        return Feed(None, rows(x), None if ctx is None else rows(ctx))

    return feed
