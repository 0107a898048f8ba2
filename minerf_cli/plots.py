"""Plots of training runs and identity codes (PNG files, headless).

* :func:`training_curve` -- loss (log y) and PSNR against step from a metrics CSV;
* :func:`psnr_vs_time` -- PSNR against wall-clock time for several runs;
* :func:`identity_codes` -- a 2-D projection of the learned identity codes with their names
  (paper Fig. 9 is a t-SNE; we use PCA, :func:`pca_2d`: deterministic, and no new dependency);
* :func:`read_metrics` -- the metrics CSV as float columns.

Metrics CSV: a header row, then one row per logged step. Columns used: ``step``, ``wall_s``
(seconds since the run started), ``loss``, ``psnr`` and optionally ``test_<column>`` (e.g.
``test_psnr``), whose cells are empty on steps where it was not computed; empty cells read
as NaN, other columns are ignored.

matplotlib is imported only inside the drawing functions (``import minerf_cli.plots`` stays
cheap), and figures are drawn on matplotlib's Agg canvas directly (``Figure`` +
``FigureCanvasAgg``): no display is needed, and the process-wide pyplot backend is left as
it was. Outputs are written through :func:`minerf_cli.fsutil.atomic_output`: never
overwritten without ``force=True``, never left half-written.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import MinerfError, UsageError
from .fsutil import atomic_output, check_output, require_file

DPI = 100


# ---------------------------------------------------------------- metrics CSV


def read_metrics(csv_path: Path, required: Sequence[str] = ("step",)) -> dict[str, np.ndarray]:
    """Read a metrics CSV into ``{column: float64 array (rows,)}`` (empty cells -> NaN).

    Raises MinerfError for a missing or empty file, a file without data rows, a missing
    ``required`` column, an empty or non-finite ``step`` cell, or a cell that is not a number.
    """
    path = require_file(Path(csv_path), "metrics CSV")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise MinerfError(f"{path}: metrics CSV has no header row")
        names = [h.strip() for h in header]
        missing = [c for c in required if c not in names]
        if missing:
            raise MinerfError(f"{path}: metrics CSV lacks column(s) {', '.join(missing)} "
                              f"(has: {', '.join(n for n in names if n)})")
        cols: dict[str, list[float]] = {n: [] for n in names if n}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            line = reader.line_num
            for j, name in enumerate(names):
                if not name:
                    continue
                cell = row[j].strip() if j < len(row) else ""
                try:
                    cols[name].append(float(cell) if cell else math.nan)
                except ValueError:
                    raise MinerfError(f"{path}:{line}: column {name!r}: not a number: {cell!r}") from None
    out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    n_rows = len(next(iter(out.values()))) if out else 0
    if n_rows == 0:
        raise MinerfError(f"{path}: metrics CSV has a header but no data rows")
    if "step" in out and not np.isfinite(out["step"]).all():
        bad = int(np.flatnonzero(~np.isfinite(out["step"]))[0])
        raise MinerfError(f"{path}: data row {bad + 1}: empty or non-finite 'step'")
    return out


# ---------------------------------------------------------------- drawing helpers


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: Path, force: bool) -> Path:
    out = Path(out_png)
    with atomic_output(out, force) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return out


def _finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _time_unit(max_seconds: float) -> tuple[float, str]:
    if max_seconds >= 2 * 3600:
        return 3600.0, "h"
    if max_seconds >= 2 * 60:
        return 60.0, "min"
    return 1.0, "s"


# ---------------------------------------------------------------- training curves


def training_curve(csv_path: Path, out_png: Path, columns: Sequence[str] = ("loss", "psnr"), *,
                   force: bool = False, title: str | None = None) -> Path:
    """Plot each of ``columns`` against ``step`` in its own panel (stacked, shared x).

    Columns whose name contains "loss" get a log y axis (non-positive values are left out).
    Where the CSV has ``test_<column>`` with values (e.g. ``test_psnr``), they are drawn as
    markers in that column's panel. A column without any value yet gives an empty panel.
    Returns the written PNG's path; raises MinerfError (bad CSV) or UsageError (no
    columns, existing output without ``force``).
    """
    columns = list(columns)
    if not columns:
        raise UsageError("training_curve: no columns to plot")
    check_output(Path(out_png), force)
    m = read_metrics(csv_path, required=("step", *columns))
    step = m["step"]

    fig = _figure(8.0, 2.0 + 2.5 * len(columns))
    axes = fig.subplots(len(columns), 1, sharex=True, squeeze=False)[:, 0]
    for ax, col in zip(axes, columns):
        log = "loss" in col.lower()
        x, y = _finite(step, m[col])
        if log:
            x, y = x[y > 0], y[y > 0]
        drawn = False
        if len(y):
            ax.plot(x, y, lw=1.0, color="C0", label=f"train {col}")
            drawn = True
        test = m.get(f"test_{col}")
        if test is not None:
            tx, ty = _finite(step, test)
            if log:
                tx, ty = tx[ty > 0], ty[ty > 0]
            if len(ty):
                ax.plot(tx, ty, "o", ms=4, color="C3", label=f"test {col}")
                ax.legend(loc="best", fontsize="small")
                drawn = True
        if drawn and log:
            ax.set_yscale("log")
        if not drawn:
            ax.text(0.5, 0.5, f"no {col} values yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(f"{col} (dB)" if "psnr" in col.lower() else col)
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle(title or Path(csv_path).name)
    fig.tight_layout()
    return _save(fig, out_png, force)


def psnr_vs_time(runs: Mapping[str, Path], out_png: Path, *, column: str = "psnr",
                 force: bool = False, title: str | None = None) -> Path:
    """Compare runs: ``column`` (PSNR) against wall-clock time ``wall_s``, one line per run
    (label -> metrics CSV), its ``test_<column>`` values as markers of the same colour.

    Time is shown in s, min or h depending on the longest run. Returns the PNG's path;
    UsageError for no runs, MinerfError for a bad CSV.
    """
    if not runs:
        raise UsageError("psnr_vs_time: no runs to compare")
    check_output(Path(out_png), force)
    data = {label: read_metrics(p, required=("wall_s", column)) for label, p in runs.items()}
    t_max = max((float(np.nanmax(d["wall_s"])) for d in data.values() if np.isfinite(d["wall_s"]).any()),
                default=0.0)
    scale, unit = _time_unit(t_max)

    fig = _figure(8.0, 5.0)
    ax = fig.subplots()
    for k, (label, d) in enumerate(data.items()):
        colour = f"C{k % 10}"
        x, y = _finite(d["wall_s"] / scale, d[column])
        ax.plot(x, y, lw=1.0, color=colour, label=str(label))
        test = d.get(f"test_{column}")
        if test is not None:
            tx, ty = _finite(d["wall_s"] / scale, test)
            if len(ty):
                ax.plot(tx, ty, "o", ms=4, color=colour, label=f"{label} (test)")
    ax.set_xlabel(f"wall-clock time ({unit})")
    ax.set_ylabel(f"{column} (dB)" if "psnr" in column.lower() else column)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or f"{column} against time")
    fig.tight_layout()
    return _save(fig, out_png, force)


# ---------------------------------------------------------------- identity codes


def _as_array(codes) -> np.ndarray:
    if hasattr(codes, "detach"):  # a torch tensor, e.g. IdentityCodes.table.weight
        codes = codes.detach().cpu().numpy()
    return np.asarray(codes, dtype=np.float64)


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project codes ``(K, d)`` (array-like or torch tensor) onto their first two principal
    components.

    Returns ``(proj (K, 2), explained (2,))``: the centred codes' coordinates along the two
    leading right singular vectors, and the fraction of the total variance each explains.
    Components beyond the data's rank (K = 2, d = 1, identical codes) are exact zeros in
    both. Signs are fixed (the largest-magnitude loading of each component is positive), so
    the result is deterministic. UsageError for K < 2 or codes that are not 2-D;
    MinerfError for non-finite codes.
    """
    x = _as_array(codes)
    if x.ndim != 2:
        raise UsageError(f"identity codes must be a (K, d) array, got shape {x.shape}")
    k, d = x.shape
    if k < 2 or d < 1:
        raise UsageError(f"a 2-D projection of identity codes needs at least 2 codes, got {k}")
    if not np.isfinite(x).all():
        raise MinerfError("identity codes contain NaN or infinite values")
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    rank = int((s > max(k, d) * np.finfo(np.float64).eps * (s[0] if len(s) else 0.0)).sum())
    proj, explained = np.zeros((k, 2)), np.zeros(2)
    total = float((s[:rank] ** 2).sum())
    for j in range(min(2, rank)):
        v = vt[j] if vt[j, np.argmax(np.abs(vt[j]))] >= 0 else -vt[j]
        proj[:, j] = xc @ v
        explained[j] = s[j] ** 2 / total
    return proj, explained


def identity_codes(names: Sequence[str], codes: np.ndarray, out_png: Path, method: str = "pca", *,
                   force: bool = False, title: str | None = None) -> Path:
    """Scatter plot of the identity codes ``(K, d)`` in 2-D (:func:`pca_2d`), each point
    labelled with its name, the explained variance in the axis labels.

    The paper's Fig. 9 uses t-SNE; ``method`` accepts only "pca" (deterministic, linear, so
    distances along the axes mean something, and no scikit-learn). With K = 2 the codes lie
    on a line (PC2 explains 0 %). UsageError for K < 2, names that do not match the codes
    or another method.
    """
    if method.lower() != "pca":
        raise UsageError(f"unknown projection method {method!r}: only 'pca' is implemented")
    names = [str(n) for n in names]
    arr = _as_array(codes)
    if arr.ndim == 2 and len(names) != arr.shape[0]:
        raise UsageError(f"{len(names)} names for {arr.shape[0]} identity codes")
    proj, explained = pca_2d(arr)
    check_output(Path(out_png), force)

    fig = _figure(7.0, 6.0)
    ax = fig.subplots()
    ax.scatter(proj[:, 0], proj[:, 1], s=25, color="C0")
    small = len(names) > 30
    for name, (px, py) in zip(names, proj):
        ax.annotate(name, (px, py), xytext=(4, 4), textcoords="offset points",
                    fontsize=6 if small else 9)
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f}% of variance)")
    ax.set_aspect("equal", adjustable="datalim")  # distances in the plot are distances of codes
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"identity codes: PCA of {arr.shape[0]} codes (d = {arr.shape[1]})")
    fig.tight_layout()
    return _save(fig, out_png, force)
