"""Evaluation over many rows in fixed-size chunks: one compile, bounded memory."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np


def chunked(fn: Callable, params, x, chunk: int, key=None) -> np.ndarray:
    """``fn(params, rows)`` (or ``fn(params, rows, fold_in(key, i))`` for chunk i when ``key``
    is given) over the rows of ``x`` in chunks of ``chunk`` rows, the last one padded with
    copies of its first row and trimmed; results concatenated along the rows."""
    x = np.asarray(x, np.float32)
    out = []
    for i, start in enumerate(range(0, len(x), chunk)):
        part = x[start : start + chunk]
        padded = np.concatenate([part, np.repeat(part[:1], chunk - len(part), 0)], 0)
        args = (params, padded) if key is None else (params, padded, jax.random.fold_in(key, i))
        out.append(np.asarray(fn(*args))[: len(part)])
    return np.concatenate(out, 0)
