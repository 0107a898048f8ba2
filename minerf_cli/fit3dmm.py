"""The ``fit3dmm`` stage: read a store's landmarks, fit the ICT model, write /tracking."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import store
from .errors import MinerfError, UsageError
from .facemodel import MOUTH_SET, load_face_model
from .geometry import euler_pitch_yaw_roll
from .output import progress_bar
from .tracking import FitConfig, fit


def fit_store(path: Path, config: FitConfig, force: bool = False) -> dict:
    """Fit the face model to the store's landmarks and add /tracking. Returns a summary."""
    path = Path(path)
    t0 = time.perf_counter()
    with store.open_store(path, require=("frames", "landmarks")) as f:
        if "tracking" in f and not force:
            raise UsageError(f"{path}: /tracking exists (use --force to replace it)")
        points = f["landmarks/points"][...]
        valid = f["landmarks/valid"][...].astype(bool)
        size = store.FrameReader(f).height  # lossless or JPEG frames
        fps = float(f["frames"].attrs["fps"])
    n = len(valid)
    if n == 0 or not valid.any():
        raise MinerfError(f"{path}: no frame has face landmarks; nothing to fit")
    if config.focal is not None and config.focal <= 0:
        raise MinerfError(f"{path}: --focal must be positive")
    model = load_face_model()
    t_read = time.perf_counter()
    with progress_bar("fit3dmm", None) as bar:
        task = bar.add_task("fit3dmm", total=config.rounds + config.iterations, info=path.name)
        result = fit(points, valid, size, fps, config, model=model,
                     progress=lambda done, total: bar.update(task, completed=done))
    t_fit = time.perf_counter()
    if not np.isfinite(result.camera_from_head).all() or not np.isfinite(result.expression).all():
        raise MinerfError(f"{path}: the fit diverged (non-finite values); check the landmarks")
    with store.add_node(path, "tracking", "fit3dmm", force=force) as g:
        g.create_dataset("intrinsics", data=result.intrinsics.astype(np.float32))
        g.create_dataset("camera_from_head", data=result.camera_from_head.astype(np.float32))
        g.create_dataset("expression", data=result.expression.astype(np.float32))
        g.create_dataset("identity", data=result.identity.astype(np.float32))
        g.create_dataset("fit_error", data=result.fit_error.astype(np.float32))
        g.attrs["expression_names"] = np.array(model.expression_names, dtype="S")
        g.attrs["units"] = "cm"
        g.attrs["camera_convention"] = "opencv"
        g.attrs["focal_estimated"] = config.focal is None
    t_end = time.perf_counter()
    err = result.fit_error[np.isfinite(result.fit_error)]
    angles = np.degrees(euler_pitch_yaw_roll(result.camera_from_head))
    mouth = [model.expression_index(nm) for nm in MOUTH_SET]
    return {
        "output": str(path),
        "frames": n,
        "valid_frames": int(valid.sum()),
        "focal": round(result.focal, 2),
        "mean_error_px": round(float(err.mean()), 3),
        "p95_error_px": round(float(np.percentile(err, 95)), 3),
        "yaw_range_deg": [round(float(angles[:, 1].min()), 1), round(float(angles[:, 1].max()), 1)],
        "mouth_activity": round(float(result.expression[:, mouth].std(0).mean()), 4),
        "seconds": {"read": round(t_read - t0, 3), "fit": round(t_fit - t_read, 3), "write": round(t_end - t_fit, 3)},
        "frames_per_second": round(n / max(t_end - t0, 1e-9), 1),
    }
