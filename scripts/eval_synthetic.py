"""Tracking accuracy on synthetic talking heads with known parameters.

    python scripts/eval_synthetic.py [--ids 4 --seconds 8 --seed 0 --work /tmp/minerf-synth-eval]

Renders heads (minerf_cli.synth), runs prep + fit3dmm on them and compares the recovered
blendshapes and head rotations with the ground truth: mean absolute error per blendshape
(jawOpen, the mouth set, eyes and brows), head rotation error (geodesic angle, degrees),
landmark reprojection error and focal. Prints NDJSON: one line per clip and a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from minerf_cli.facemodel import MOUTH_SET, load_face_model
from minerf_cli.fit3dmm import fit_store
from minerf_cli.prep import PrepOptions, prep
from minerf_cli.synth import synthesize
from minerf_cli.tracking import FitConfig

EYES_BROWS = ("eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L",
              "browOuterUp_R", "browDown_L", "browDown_R")


def rotation_error_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotation stacks (N,3,3) in degrees."""
    cos = (np.einsum("nij,nij->n", Ra, Rb) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def evaluate_clip(clip: dict, work: Path, size: int) -> dict:
    model = load_face_model()
    store_path = work / (Path(clip["video"]).stem + ".h5")
    prep(Path(clip["video"]), store_path, PrepOptions(size=size, force=True))
    fit_sum = fit_store(store_path, FitConfig(), force=True)
    gt = np.load(clip["gt"])
    with h5py.File(store_path, "r") as f:
        ex = f["tracking/expression"][...]
        M = f["tracking/camera_from_head"][...]
        crop = f["frames"].attrs["crop_box"]
        valid = f["landmarks/valid"][...]
    n = min(len(ex), len(gt["expression"]))
    ex_gt, M_gt = gt["expression"][:n], gt["camera_from_head"][:n]
    mae = np.abs(ex[:n] - ex_gt).mean(0)
    idx = {nm: model.expression_index(nm) for nm in model.expression_names}
    rot = rotation_error_deg(M[:n, :3, :3], M_gt[:, :3, :3])
    focal_gt = float(gt["intrinsics"][0, 0]) * size / float(crop[2])
    jaw = idx["jawOpen"]
    return {
        "clip": Path(clip["video"]).name, "frames": n, "valid_fraction": float(valid.mean()),
        "mean_error_px": fit_sum["mean_error_px"],
        "focal": fit_sum["focal"], "focal_gt": round(focal_gt, 1),
        "rotation_error_deg": {"mean": round(float(rot.mean()), 3), "p95": round(float(np.percentile(rot, 95)), 3)},
        "jawOpen_mae": round(float(mae[jaw]), 4),
        "jawOpen_corr": round(float(np.corrcoef(ex[:n, jaw], ex_gt[:, jaw])[0, 1]), 4),
        "mouth_set_mae": round(float(np.mean([mae[idx[k]] for k in MOUTH_SET])), 4),
        "mae": {k: round(float(mae[idx[k]]), 4) for k in (*MOUTH_SET, *EYES_BROWS)},
        "all_blendshapes_mae": round(float(mae.mean()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/tmp/minerf-synth-eval"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    clips = synthesize(args.work, ids=args.ids, seconds=args.seconds, size=args.size, seed=args.seed, force=True)
    rows = [evaluate_clip(c, args.work, args.size) for c in clips]
    for r in rows:
        print(json.dumps(r), flush=True)
    keys = rows[0]["mae"].keys()
    summary = {
        "clips": len(rows),
        "jawOpen_mae": round(float(np.mean([r["jawOpen_mae"] for r in rows])), 4),
        "mouth_set_mae": round(float(np.mean([r["mouth_set_mae"] for r in rows])), 4),
        "rotation_error_deg": round(float(np.mean([r["rotation_error_deg"]["mean"] for r in rows])), 3),
        "mean_error_px": round(float(np.mean([r["mean_error_px"] for r in rows])), 3),
        "mae": {k: round(float(np.mean([r["mae"][k] for r in rows])), 4) for k in keys},
    }
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
