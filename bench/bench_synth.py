"""Benchmark synthetic talking-head rendering: frames per second, render only and end to end.

    python bench/bench_synth.py [--size 512] [--seconds 8] [--seed 0]

Prints one JSON object: render-only fps (frames rendered in this process, nothing written),
the rasterizer's share, and end-to-end fps of `synthesize_clip` (audio, rendering, H.264 +
AAC encoding in ffmpeg's own process, ground truth), plus the machine's core count and load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from minerf_cli import raster, synth  # noqa: E402
from minerf_cli.synth_head import HeadRenderer  # noqa: E402


def render_only(size: int, seconds: float, seed: int) -> dict:
    plan = synth.clip_plan(synth.identity_seeds(seed, 1)[0], seconds, size)
    renderer = HeadRenderer(plan["look"], size)
    frames = synth.render_frames(plan, renderer)
    next(frames)  # warm-up (allocations, caches)
    raster_s = [0.0]
    original = raster.rasterize

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = original(*args, **kwargs)
        raster_s[0] += time.perf_counter() - t
        return out

    raster.rasterize = timed
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(1 for _ in frames)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        raster.rasterize = original
    return {"frames": n, "fps": round(n / wall, 1), "ms_per_frame": round(1e3 * wall / n, 2),
            "cpu_ms_per_frame": round(1e3 * cpu / n, 2), "rasterize_ms_per_frame": round(1e3 * raster_s[0] / n, 2)}


def end_to_end(size: int, seconds: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        clip = synth.synthesize_clip(Path(tmp) / "bench", identity_seed=synth.identity_seeds(seed, 1)[0],
                                     seconds=seconds, size=size)
        wall = time.perf_counter() - t0
        mb = os.path.getsize(clip["video"]) / 1e6
    return {"frames": clip["frames"], "fps": round(clip["frames"] / wall, 1), "seconds_total": round(wall, 2),
            "video_mb": round(mb, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = {
        "size": args.size,
        "seconds": args.seconds,
        "cpu_count": os.cpu_count(),
        "load_avg_before": round(os.getloadavg()[0], 2),
        "render_only": render_only(args.size, args.seconds, args.seed),
        "end_to_end": end_to_end(args.size, args.seconds, args.seed),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "numpy": np.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
