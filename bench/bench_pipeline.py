#!/usr/bin/env python
"""End-to-end speed of `minerf prep` + `minerf fit3dmm` (the CLI, start-up included).

    python bench/bench_pipeline.py [--video V ...] [--seconds 24 8] [--size 512]

Without --video it renders synthetic 512x512 clips of the given lengths first (not timed).
Runs each command as a subprocess, as a user would, and prints one JSON line per clip with
the wall time and frames/s of each stage and of both together; the summaries that the
commands print (per-stage seconds inside prep, fit time inside fit3dmm) are included.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return dt, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, nargs="*", default=[])
    ap.add_argument("--seconds", type=float, nargs="*", default=[24.0, 8.0])
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    minerf = [sys.executable, "-m", "minerf_cli.app"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = list(args.video)
        for k, s in enumerate([] if videos else args.seconds):
            out = tmp / f"synth{k}"
            _, summary = run([*minerf, "-q", "synth", "-o", str(out), "--ids", "1", "--seconds", str(s),
                              "--size", str(args.size), "--seed", str(k)])
            videos.append(Path(summary["clips"][0]["video"]))
        for video in videos:
            store = tmp / (video.stem + ".h5")
            t_prep, prep_sum = run([*minerf, "-q", "prep", str(video), "-o", str(store), "--size", str(args.size), "--force"])
            t_fit, fit_sum = run([*minerf, "-q", "fit3dmm", str(store), "--force"])
            n = prep_sum["frames"]
            print(json.dumps({
                "video": video.name, "frames": n, "size": args.size,
                "prep_s": round(t_prep, 2), "prep_fps": round(n / t_prep, 1),
                "fit3dmm_s": round(t_fit, 2), "fit3dmm_fps": round(n / t_fit, 1),
                "total_s": round(t_prep + t_fit, 2), "total_fps": round(n / (t_prep + t_fit), 1),
                "prep_summary_seconds": prep_sum.get("seconds"), "fit3dmm_summary_seconds": fit_sum.get("seconds"),
                "mean_error_px": fit_sum.get("mean_error_px"),
            }), flush=True)


if __name__ == "__main__":
    main()
