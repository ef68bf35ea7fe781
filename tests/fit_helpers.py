"""Shared test helpers for ``fl.fit``: interrupting a run between checkpoints."""

import contextlib

import pytest

from flowjax_lab.training import fitting as train_mod


@contextlib.contextmanager
def interrupted_at(monkeypatch, step: int):
    """Within the block, ``fl.fit``'s progress bar raises KeyboardInterrupt once ``step`` steps
    have run (the block must raise it); the real tqdm is back afterwards."""

    class Interrupting(train_mod.tqdm):
        done = 0

        def update(self, n=1):
            Interrupting.done += n
            if Interrupting.done >= step:
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(train_mod, "tqdm", Interrupting)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.undo()
