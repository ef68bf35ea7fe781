"""Training checkpoints with flax.serialization: atomic writes, last-k kept, checked on restore.

A checkpoint at step s is the folder ``directory/s/`` holding one msgpack file per named pytree
of arrays (``params.msgpack``, ``opt_state.msgpack``, ...) and ``meta.json`` (step, history, ...,
the run's ``config`` dict, and each tree's structure and leaf shapes/dtypes). A save writes a
hidden temporary folder, fsyncs it and renames it into place, so an interrupted save never
replaces or half-writes a good checkpoint; only then are steps beyond the last ``keep`` deleted.
A restore checks the saved structure, shapes and dtypes against the live trees and names the
first difference instead of silently reshaping; it reads only the trees it is asked for.
A save costs one device-to-host copy plus a few ms of file writes (no background threads).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any

import jax
import numpy as np
from flax import serialization

from flowjax_lab.checks import positive_int


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored (corrupt, or saved from different trees)."""


def _describe(tree) -> dict:
    leaves, treedef = jax.tree.flatten(tree)
    return {
        "treedef": str(treedef),
        "leaves": [[list(np.shape(x)), str(np.asarray(x).dtype)] for x in leaves],
    }


def to_json(value: Any) -> Any:
    """Numbers, arrays and containers as JSON-safe values (NaN/inf become None)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return np.where(np.isfinite(value), value.astype(object), None).tolist()
        return value.tolist() if value.dtype.kind in "biuf" else to_json(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class Checkpointer:
    """Save and restore training state in ``directory``, keeping the last ``keep`` steps.

    Example:
      >>> ckpt = Checkpointer("/tmp/run/checkpoints", keep=3)
      >>> ckpt.save(100, {"params": params}, meta={"loss": 1.0}, config={"lr": 1e-3})
      >>> trees, meta, config = ckpt.restore({"params": params})
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        keep = positive_int(keep, "keep")
        self.directory, self.keep = os.path.abspath(os.fspath(directory)), keep
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(f"{self.directory} exists and is not a directory")
        os.makedirs(self.directory, exist_ok=True)

    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (temporary folders are not steps)."""
        return sorted(
            int(name)
            for name in os.listdir(self.directory)
            if name.isdigit() and os.path.isfile(os.path.join(self.directory, name, "meta.json"))
        )

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, trees: dict, meta: dict | None = None, config=None) -> None:
        """Write ``trees`` (name -> pytree of arrays), ``meta`` and ``config`` at ``step``."""
        step = int(step)
        if step in self.all_steps():
            raise CheckpointError(f"{self.directory}: a checkpoint for step {step} already exists")
        host = jax.device_get(trees)  # one transfer for all trees
        meta = dict(
            to_json(meta or {}),
            step=step,
            trees={k: _describe(v) for k, v in host.items()},
            config=to_json(config or {}),
        )
        tmp = tempfile.mkdtemp(prefix=f".tmp-{step}-", dir=self.directory)
        try:
            for name, tree in host.items():
                leaves = {str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}
                _write(
                    os.path.join(tmp, f"{name}.msgpack"), serialization.msgpack_serialize(leaves)
                )
            _write(os.path.join(tmp, "meta.json"), json.dumps(meta).encode())
            os.replace(tmp, os.path.join(self.directory, str(step)))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.all_steps()[: -self.keep]:
            shutil.rmtree(os.path.join(self.directory, str(old)), ignore_errors=True)

    def read_meta(self, step: int | None = None) -> tuple[int, dict, dict]:
        """(step, meta, config) of checkpoint ``step`` (default: the latest) without the arrays."""
        step = self._step(step)
        try:
            with open(os.path.join(self.directory, str(step), "meta.json"), "rb") as fh:
                meta = json.loads(fh.read())
            if not isinstance(meta, dict):
                raise TypeError(f"meta.json holds a {type(meta).__name__}, not an object")
        except Exception as err:
            raise CheckpointError(
                f"{self.directory}: the checkpoint at step {step} is corrupt or unreadable "
                f"({type(err).__name__}: {err}); nothing was changed on disk"
            ) from err
        return step, meta, dict(meta.pop("config", None) or {})

    def restore(self, like: dict, step: int | None = None) -> tuple[dict, dict, dict]:
        """Restore the trees named in ``like`` into its structure: (trees, meta, config).

        Only those trees are read; leaves come back as jax arrays on the default device.

        Raises:
          CheckpointError: no checkpoint, a corrupt one, or trees whose structure, leaf shapes or
            dtypes differ from ``like`` (the message names the first difference).
        """
        step, meta, config = self.read_meta(step)
        saved, where = meta.get("trees", {}), f"{self.directory} step {step}"
        trees = {}
        for name, tree in like.items():
            if name not in saved:
                raise CheckpointError(
                    f"{where}: no '{name}' in the checkpoint (has {sorted(saved)})"
                )
            _compare(name, saved[name], _describe(tree), where)
            path = os.path.join(self.directory, str(step), f"{name}.msgpack")
            try:
                with open(path, "rb") as fh:
                    leaves = serialization.msgpack_restore(fh.read())
                leaves = [np.asarray(leaves[str(i)]) for i in range(len(saved[name]["leaves"]))]
                _compare(name, saved[name], _describe(leaves), where, structure=False)
            except Exception as err:
                raise CheckpointError(
                    f"{where}: the arrays of '{name}' are corrupt or unreadable "
                    f"({type(err).__name__}: {err}); nothing was changed on disk"
                ) from err
            trees[name] = jax.tree.unflatten(jax.tree.structure(tree), list(jax.device_put(leaves)))
        return trees, meta, config

    def _step(self, step):
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        step = max(steps) if step is None else int(step)
        if step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (has {steps})")
        return step


def _compare(name: str, saved: dict, live: dict, where: str, structure: bool = True) -> None:
    if structure and saved["treedef"] != live["treedef"]:
        raise CheckpointError(
            f"{where}: '{name}' has a different tree structure than the current one "
            f"(saved {saved['treedef']}, current {live['treedef']})"
        )
    if len(saved["leaves"]) != len(live["leaves"]):
        raise CheckpointError(
            f"{where}: '{name}' has {len(saved['leaves'])} leaves in the checkpoint, but the "
            f"current tree has {len(live['leaves'])}"
        )
    for i, (got, want) in enumerate(zip(saved["leaves"], live["leaves"])):
        if list(got[0]) != list(want[0]) or got[1] != want[1]:
            raise CheckpointError(
                f"{where}: '{name}' leaf {i} is {got[1]}{got[0]} in the checkpoint, but the "
                f"current tree expects {want[1]}{want[0]}"
            )
