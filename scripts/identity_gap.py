#!/usr/bin/env python
"""Is one render measurably further from a person than another? (issue 3's Table-1 check)

    python scripts/identity_gap.py --ref B.h5 A_render.h5 B_render.h5 [--other A.h5]

For every frame of each render (a store or video minerf reads) the dlib face descriptor's
cosine distance (ACD) and Euclidean distance to the centroid of the reference person's
descriptors (dlib's own detector finds the face); prints one JSON line with per-render means
and standard errors and, for the first two renders, the difference of the means with a 95%
bootstrap interval (frames resampled, 10,000 draws) and Welch's t. ``--other`` adds the
driving person's real frames as a scale: how far a different person is from the reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def descriptors(path: Path, fid, stride: int = 1) -> np.ndarray:
    """(n, 128) descriptors of the frames of a store (frames with a face only)."""
    import h5py

    from minerf_cli.store import FrameReader

    out = []
    with h5py.File(path) as f:
        frames = FrameReader(f)
        for k in range(0, len(frames), stride):
            d = fid.descriptor(frames[k])
            if d is not None:
                out.append(d)
    return np.array(out).reshape(-1, 128)


def distances(desc: np.ndarray, centroid: np.ndarray) -> dict[str, np.ndarray]:
    from minerf_cli.metrics import centroid_distances

    acd, dist = centroid_distances(desc, centroid)
    return {"acd": acd, "face_distance": dist}


def summary(x: np.ndarray) -> dict:
    return {"mean": round(float(x.mean()), 5), "sem": round(float(x.std(ddof=1) / np.sqrt(len(x))), 5),
            "frames": int(len(x))}


def gap(a: np.ndarray, b: np.ndarray, draws: int = 10_000, seed: int = 0) -> dict:
    """mean(a) - mean(b), its 95% bootstrap interval and Welch's t."""
    rng = np.random.default_rng(seed)
    boot = (rng.choice(a, (draws, len(a))).mean(1) - rng.choice(b, (draws, len(b))).mean(1))
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    d = float(a.mean() - b.mean())
    return {"difference": round(d, 5), "ci95": [round(float(v), 5) for v in np.percentile(boot, [2.5, 97.5])],
            "welch_t": round(d / max(se, 1e-12), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("renders", type=Path, nargs="+")
    ap.add_argument("--ref", type=Path, required=True, help="the reference person's store")
    ap.add_argument("--other", type=Path, help="another person's store (a scale)")
    ap.add_argument("--ref-stride", type=int, default=3, help="use every k-th reference frame")
    args = ap.parse_args()

    from minerf_cli.metrics import FaceIdentity

    fid = FaceIdentity()
    centroid = descriptors(args.ref, fid, args.ref_stride).mean(0)
    per = {str(p): distances(descriptors(p, fid), centroid) for p in args.renders}
    if args.other:
        per[f"other: {args.other}"] = distances(descriptors(args.other, fid, args.ref_stride), centroid)
    out: dict = {"reference": str(args.ref),
                 "renders": {k: {m: summary(v) for m, v in d.items()} for k, d in per.items()}}
    if len(args.renders) >= 2:
        a, b = per[str(args.renders[0])], per[str(args.renders[1])]
        out["first_minus_second"] = {m: gap(a[m], b[m]) for m in a}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
