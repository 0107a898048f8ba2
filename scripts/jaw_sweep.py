#!/usr/bin/env python
"""Make an expression source whose only moving blendshape is jawOpen (issue 4 diagnostics).

    python scripts/jaw_sweep.py STORE.h5 -o SWEEP.h5 [--frames 150] [--low 0] [--high 0.6] [--period 30]
    minerf transfer RUN --id NAME --from SWEEP.h5 --store rendered.h5     # NAME: STORE's identity
    python scripts/eval_lipsync.py --render rendered.h5                  # re-tracked vs asked jawOpen

SWEEP.h5 is a copy of the tracked STORE (frames, landmarks, poses: transfer renders NAME at
its own poses) cut to its first ``--frames`` frames, whose /tracking/expression is every
blendshape at the clip's mean over its training frames, except jawOpen, which follows a
sinusoid between --low and --high with --period frames. Rendering it and re-tracking the
result measures how the trained field responds to jawOpen alone, apart from the audio model
and from the rest of the mouth. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np


def sweep(n: int, low: float, high: float, period: float) -> np.ndarray:
    """(n,) jawOpen: low at frame 0, rising to high at period / 2, back to low at period, ..."""
    t = np.arange(n)
    return low + (high - low) * 0.5 * (1.0 - np.cos(2.0 * np.pi * t / period))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--low", type=float, default=0.0)
    ap.add_argument("--high", type=float, default=0.6)
    ap.add_argument("--period", type=float, default=30.0, help="frames per open-close cycle")
    args = ap.parse_args()

    import h5py

    from minerf_cli.clips import split_indices
    from minerf_cli.store import expression_names

    if args.output.resolve() == args.store.resolve():
        sys.exit("jaw_sweep: the output must differ from the store")
    shutil.copyfile(args.store, args.output)
    with h5py.File(args.output, "r+") as f:
        expr = f["tracking/expression"][()]
        names = expression_names(f)
        valid = f["landmarks/valid"][()].astype(bool) & np.isfinite(expr).all(1)
        train, _ = split_indices(len(expr), valid)
        mean = expr[train].mean(0)
        jaw = names.index("jawOpen")
        n = min(args.frames, len(expr))
        new = np.repeat(mean[None], len(expr), 0).astype(expr.dtype)
        new[:n, jaw] = sweep(n, args.low, args.high, args.period)
        f["tracking/expression"][...] = new
    print(json.dumps({"sweep": str(args.output), "frames": n, "jawOpen": [args.low, args.high],
                      "period": args.period, "mean_jawOpen_of_clip": round(float(mean[jaw]), 4)}))


if __name__ == "__main__":
    main()
