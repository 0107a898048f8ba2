#!/usr/bin/env python
"""Peak host memory of `minerf train` on many identities: preloaded vs streamed frames.

    python bench/bench_stream.py STORE.h5 [--ids 16] [--steps 20] [--cache-frames 64] [--device cpu]

Links STORE under --ids different names (one identity each, no disk copies) in a temporary
directory, trains a tiny model for --steps steps with the given --cache-frames (0: all
frames preloaded), and prints one JSON line: the decoded size of all frames, the training
process's peak RSS (ru_maxrss of the child), wall time. The model is tiny on purpose: the
figure is about the data path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path)
    ap.add_argument("--ids", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cache-frames", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from minerf_cli import store

    with store.open_store(args.store) as f:
        r = store.FrameReader(f)
        n, h, w = len(r), r.height, r.width
    with tempfile.TemporaryDirectory() as td:
        for k in range(args.ids):
            os.symlink(args.store.resolve(), Path(td) / f"id{k:03d}.h5")
        cmd = [sys.executable, "-m", "minerf_cli.app", "-q", "train", "--ids", td, "-o", str(Path(td) / "run"),
               "--steps", str(args.steps), "--rays", "256", "--samples", "8:8", "--field-option", "width=32",
               "--field-option", "depth=2", "--field-option", "color_width=16", "--field-option", "color_depth=1",
               "--test-frames", "0", "--val-every", "1000000", "--checkpoint-every", "1000000",
               "--cache-frames", str(args.cache_frames), "--device", args.device]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"train failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"store": str(args.store), "ids": args.ids, "frames_per_id": n, "size": [h, w],
                      "cache_frames": args.cache_frames, "steps": args.steps,
                      "decoded_frames_and_masks_gb": round(args.ids * n * h * w * 4 / 2**30, 2),
                      "peak_rss_gb": round(peak_kb / 2**20, 2), "wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
