"""PNG plots of a run with matplotlib's Agg backend: loss curves, 2-D densities, samples.

Everything here takes numpy arrays (no JAX) and writes one PNG; ``flows.py`` and ``vaes.py`` compute the
arrays (the model's log-density on a grid, samples) and calls these.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Extent = tuple[float, float, float, float]  # xmin, xmax, ymin, ymax


def loss_curves(
    history: Mapping[str, np.ndarray],
    path: str | Path,
    title: str = "",
    labels: tuple[str, str, str] = ("loss", "validation NLL", "loss (nats, model units)"),
) -> Path:
    """Training loss (raw and a running mean), its terms when mixed, and the validation NLL.

    ``history`` is ``fl.fit``'s: ``step``, ``loss``, ``loss_<term>`` per step, ``val_step`` and
    ``val_loss`` at validations. ``labels``: (training curve, validation curve, y axis).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    steps = np.asarray(history.get("step", []))
    terms = [k for k in history if k.startswith("loss_")]
    shown = []
    for name in ["loss", *(terms if len(terms) > 1 else [])]:
        values = np.asarray(history.get(name, []), np.float64)
        if not values.size:
            continue
        smooth = _running_median(values, max(1, values.size // 50))
        label = labels[0] if name == "loss" else name
        (line,) = ax.plot(steps, smooth, lw=1.5, label=f"{label} (running median)")
        if name == "loss":
            ax.plot(steps, values, lw=0.5, alpha=0.3, color=line.get_color())
        shown.append(smooth[np.isfinite(smooth)])
    if len(history.get("val_loss", [])):
        val = np.asarray(history["val_loss"], np.float64)
        ax.plot(history["val_step"], val, "o-", ms=3, lw=1.2, label=labels[1])
        shown.append(val[np.isfinite(val)])
    values = np.concatenate([v[len(v) // 20 :] for v in shown]) if shown else np.zeros(0)
    if values.size:  # the early transient and single-batch spikes would squash the curve
        lo, hi = np.quantile(values, [0.0, 0.98])
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-6), hi + 0.1 * (hi - lo + 1e-6))
    ax.set_xlabel("step")
    ax.set_ylabel(labels[2])
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _running_median(values: np.ndarray, width: int) -> np.ndarray:
    """Median over the last ``width`` values (fewer at the start), ignoring NaNs: robust to the
    odd spike of a single batch."""
    if width <= 1:
        return values
    padded = np.concatenate([np.full(width - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN
        return np.nanmedian(windows, axis=1)


def grid_points(extent: Extent, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell centres of a ``size`` x ``size`` grid over ``extent``: (xs, ys, points (size^2, 2)).

    ``points`` are in row-major image order: row i has y = ys[i], so ``values.reshape(size,
    size)`` is an image with y along the rows, for ``imshow(..., origin="lower")``.
    """
    xmin, xmax, ymin, ymax = extent
    xs = xmin + (xmax - xmin) * (np.arange(size) + 0.5) / size
    ys = ymin + (ymax - ymin) * (np.arange(size) + 0.5) / size
    gx, gy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)


def auto_extent(points: np.ndarray, pad: float = 0.1, quantile: float = 0.005) -> Extent:
    """A box holding all but ``quantile`` of the points on each side, widened by ``pad``."""
    lo = np.quantile(points, quantile, axis=0)
    hi = np.quantile(points, 1.0 - quantile, axis=0)
    width = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad * width, hi + pad * width
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def density_panels(
    panels: Sequence[tuple[str, str, np.ndarray]],
    extent: Extent,
    path: str | Path,
    size: int = 200,
    title: str = "",
) -> Path:
    """Side-by-side 2-D pictures on one ``extent``.

    Each panel is (title, kind, array): kind "log_density" takes log-densities on the
    ``grid_points(extent, size)`` grid (shape (size^2,)) and shows exp of them; kind "points"
    takes (n, 2) points and shows their 2-D histogram on the same grid.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, (name, kind, values) in zip(axes, panels):
        values = np.asarray(values, np.float64)
        if kind == "log_density":
            image = np.exp(values.reshape(size, size) - np.nanmax(values))
            image = np.where(np.isfinite(image), image, 0.0)
        elif kind == "points":
            bins = min(size, 120)
            image, _, _ = np.histogram2d(
                values[:, 1], values[:, 0], bins=bins, range=[extent[2:], extent[:2]]
            )
        else:
            raise ValueError(f"panel kind must be 'log_density' or 'points', got {kind!r}")
        ax.imshow(image, origin="lower", extent=extent, cmap="magma", aspect="auto")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def image_grid(
    images: np.ndarray,
    path: str | Path,
    shape: tuple[int, int] = (8, 8),
    title: str = "",
    cols: int | None = None,
) -> Path:
    """A grid of grey-scale images from rows of (n, h*w) pixel intensities in [0, 1]; ``cols``
    images per row (default: a square grid)."""
    images = np.clip(np.asarray(images, np.float64), 0.0, 1.0).reshape(-1, *shape)
    cols = int(np.ceil(np.sqrt(len(images)))) if cols is None else cols
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), dpi=110)
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        if i < len(images):
            ax.imshow(images[i], cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def image_pairs(
    originals: np.ndarray,
    reconstructions: np.ndarray,
    path: str | Path,
    shape: tuple[int, int],
    cols: int = 8,
    title: str = "",
) -> Path:
    """Images above their reconstructions: rows of ``cols`` originals, each row followed by the
    row of their reconstructions; (n, h*w) intensities in [0, 1]."""
    originals = np.asarray(originals, np.float64)
    reconstructions = np.asarray(reconstructions, np.float64)
    n = len(originals)
    blank = np.zeros((-n % cols, originals.shape[1]))
    top = np.concatenate([originals, blank]).reshape(-1, cols, originals.shape[1])
    bottom = np.concatenate([reconstructions, blank]).reshape(-1, cols, originals.shape[1])
    pairs = np.stack([top, bottom], 1).reshape(-1, originals.shape[1])  # row-pairs interleaved
    return image_grid(
        pairs, path, shape, title=title or "top: image, below: reconstruction", cols=cols
    )


def bits_per_dim_curve(curves: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Training (per batch and its running median) and validation bits/dim over steps.

    ``curves``: ``step`` and ``train`` (one value per step), ``val_step`` and ``val``.
    """
    history = {"step": curves["step"], "loss": curves["train"]}
    history |= {"val_step": curves.get("val_step", []), "val_loss": curves.get("val", [])}
    labels = ("train bits/dim", "validation bits/dim", "bits / dim (integer-pixel scale)")
    return loss_curves(history, path, title or "bits / dim", labels)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_run(
    run_dir: str | Path,
    history: Mapping[str, np.ndarray],
    samples: np.ndarray,
    *,
    log_density: Callable[[np.ndarray], np.ndarray] | None = None,
    data: np.ndarray | None = None,
    target_log_density: Callable[[np.ndarray], np.ndarray] | None = None,
    extent: Extent | None = None,
    grid_size: int = 200,
    images: bool = False,
    image_shape: tuple[int, int] = (8, 8),
    title: str = "",
) -> list[Path]:
    """The pictures of a run: ``loss.png``; for 2-D, ``density.png`` (the data histogram or the
    target density, the learned density, samples); for images, ``samples.png``.

    ``log_density`` and ``target_log_density`` map (n, 2) points to (n,) log-densities (data
    units); ``samples`` are the model's samples in data units (pixel intensities for images,
    rows of ``image_shape`` pixels).
    """
    run_dir = Path(run_dir)
    paths = [loss_curves(history, run_dir / "loss.png", title)]
    if samples.shape[1] == 2 and log_density is not None:
        if extent is None:
            extent = auto_extent(data) if data is not None else (-4.0, 4.0, -4.0, 4.0)
        _, _, grid = grid_points(extent, grid_size)
        panels = []
        if data is not None:
            panels.append(("data", "points", data))
        if target_log_density is not None:
            panels.append(("target density", "log_density", target_log_density(grid)))
        panels += [("learned density", "log_density", log_density(grid))]
        panels += [("samples", "points", samples)]
        paths.append(density_panels(panels, extent, run_dir / "density.png", grid_size, title))
    if images:
        paths.append(image_grid(samples[:64], run_dir / "samples.png", image_shape, title))
    return paths
