"""Host-side validation of a data array before training."""

import numpy as np


def check_data(x, dim: int | None = None, name: str = "data") -> None:
    """Raises ValueError if `x` is not a finite, floating (n, d) array (with d == dim if given).

    Pure numpy; call on the host before training. Checks, in order: rank 2, at least one row,
    floating dtype, dimension d == dim, and all values finite (reporting the count of
    non-finite values and the index of the first row that holds one).

    Args:
      x: array-like of shape (n, d).
      dim: expected event dimension d, or None to accept any.
      name: what to call the array in error messages.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a rank-2 array (n, d), got rank {x.ndim} {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: has no rows (shape {x.shape})")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected a floating dtype, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: dimension mismatch: expected d={dim}, got d={x.shape[1]}")
    finite = np.isfinite(x)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"{name}: {int((~finite).sum())} non-finite values (NaN/inf) in {bad_rows.size} "
            f"rows; first bad row is index {int(bad_rows[0])}"
        )
