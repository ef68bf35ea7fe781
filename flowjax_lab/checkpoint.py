"""Training checkpoints with orbax: atomic writes, last-k kept, checked against the live trees.

A checkpoint at step s holds named pytrees of arrays (params, optimizer state, ...) and a JSON
``meta`` dict (step, history, ..., and the run's ``config`` dict). Each pytree is stored as its flat
list of leaves, with its tree structure and leaf shapes/dtypes in the metadata, so a restore into
trees of a different structure fails with a message naming the difference instead of silently
reshaping. orbax writes each step into a temporary folder and renames it when complete, so an
interrupted save never replaces a good checkpoint.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored (corrupt, or saved from different trees)."""


def _describe(tree) -> dict:
    leaves, treedef = jax.tree.flatten(tree)
    return {
        "treedef": str(treedef),
        "leaves": [[list(np.shape(x)), str(np.asarray(x).dtype)] for x in leaves],
    }


def _leaves(tree) -> dict:
    return {f"leaf_{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree))}


def to_json(value: Any) -> Any:
    """Numbers, arrays and containers as JSON-safe values (NaN/inf become None)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class Checkpointer:
    """Save and restore training state in ``directory``, keeping the last ``keep`` steps.

    Example:
      >>> ckpt = Checkpointer("/tmp/run/checkpoints", keep=3)
      >>> ckpt.save(100, {"params": params}, meta={"loss": 1.0}, config={"lr": 1e-3})
      >>> trees, meta, config = ckpt.restore({"params": params})
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, trees: dict, meta: dict | None = None, config=None) -> None:
        """Write ``trees`` (name -> pytree of arrays), ``meta`` and ``config`` at ``step``."""
        step = int(step)
        if step in self.all_steps():
            raise CheckpointError(f"{self.directory}: a checkpoint for step {step} already exists")
        trees_meta = {k: _describe(v) for k, v in trees.items()}
        meta = dict(to_json(meta or {}), step=step, trees=trees_meta, config=to_json(config or {}))
        state = {name: _leaves(tree) for name, tree in trees.items()}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def read_meta(self, step: int | None = None) -> tuple[int, dict, dict]:
        """(step, meta, config) of checkpoint ``step`` (default: the latest) without the arrays."""
        step = self._step(step)
        try:
            items = self._manager.restore(
                step,
                args=ocp.args.Composite(meta=ocp.args.JsonRestore()),
            )
        except Exception as err:  # orbax raises many types for unreadable files
            raise CheckpointError(
                f"{self.directory}: the checkpoint at step {step} is corrupt or unreadable "
                f"({type(err).__name__}: {err}); nothing was changed on disk"
            ) from err
        meta = dict(items["meta"])
        return step, meta, dict(meta.pop("config", None) or {})

    def restore(self, like: dict, step: int | None = None) -> tuple[dict, dict, dict]:
        """Restore the trees named in ``like`` into its structure: (trees, meta, config).

        Raises:
          CheckpointError: no checkpoint, a corrupt one, or trees whose structure, leaf shapes or
            dtypes differ from ``like`` (the message names the first difference).
        """
        step, meta, config = self.read_meta(step)
        saved = meta.get("trees", {})
        for name, tree in like.items():
            if name not in saved:
                raise CheckpointError(
                    f"{self.directory} step {step}: no '{name}' in the checkpoint (has {sorted(saved)})"
                )
            _compare(name, saved[name], _describe(tree), f"{self.directory} step {step}")
        abstract = {  # every saved tree (orbax restores whole items), shapes from the metadata
            name: {
                f"leaf_{i:05d}": jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))
                for i, (shape, dtype) in enumerate(desc["leaves"])
            }
            for name, desc in saved.items()
        }
        try:
            state = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )["state"]
        except Exception as err:
            raise CheckpointError(
                f"{self.directory}: the arrays of the checkpoint at step {step} are corrupt or "
                f"unreadable ({type(err).__name__}: {err}); nothing was changed on disk"
            ) from err
        trees = {
            name: jax.tree.unflatten(
                jax.tree.structure(tree), [state[name][k] for k in sorted(state[name])]
            )
            for name, tree in like.items()
        }
        return trees, meta, config

    def wait(self) -> None:
        """Block until pending (asynchronous) saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def _step(self, step):
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        step = max(steps) if step is None else int(step)
        if step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (has {steps})")
        return step


def _compare(name: str, saved: dict, live: dict, where: str) -> None:
    if saved["treedef"] != live["treedef"]:
        raise CheckpointError(
            f"{where}: '{name}' has a different tree structure than the current one "
            f"(saved {saved['treedef']}, current {live['treedef']})"
        )
    for i, (got, want) in enumerate(zip(saved["leaves"], live["leaves"])):
        if list(got[0]) != list(want[0]) or got[1] != want[1]:
            raise CheckpointError(
                f"{where}: '{name}' leaf {i} is {got[1]}{got[0]} in the checkpoint, but the "
                f"current tree expects {want[1]}{want[0]}"
            )
