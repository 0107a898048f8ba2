#!/usr/bin/env python
"""Time `minerf prep` on a video and print frames/s per stage as JSON.

    python bench/bench_prep.py VIDEO [--size 512] [--max-frames N] [--repeat 3]

Runs the prep library in this process (as the CLI does) into a temporary directory,
``--repeat`` times, and reports the best run (least disturbed by other load; the first,
"cold" run also pays for importing mediapipe) plus the CPU seconds per frame of this
process and its ffmpeg children, which do not depend on other load. On a shared machine,
``runs_other_processes_cores`` says how many cores' worth of CPU other processes took
during each run: above ~0.2 the wall-clock numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()

    from minerf_cli.output import state
    from minerf_cli.prep import PrepOptions, prep

    state["quiet"] = True
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeat):
            load = os.getloadavg()[0]
            b0, c0, t0 = machine_busy_seconds(), cpu_seconds(), time.perf_counter()
            summary = prep(args.video, Path(tmp) / f"bench{k}.h5",
                           PrepOptions(size=args.size, max_frames=args.max_frames, force=True))
            wall, cpu, b1 = time.perf_counter() - t0, cpu_seconds() - c0, machine_busy_seconds()
            # cores' worth of CPU that other processes used meanwhile (0 on a quiet machine)
            others = None if b0 is None else max(0.0, (b1 - b0 - cpu) / wall)
            runs.append((wall, cpu, load, others, summary))
    wall, cpu, load, others, best = min(runs, key=lambda r: r[0])
    n = best["frames"]
    report = {
        "video": str(args.video),
        "frames": n,
        "size": args.size,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": round(load, 2),
        "runs_wall_seconds": [round(r[0], 2) for r in runs],
        "runs_other_processes_cores": [None if r[3] is None else round(r[3], 2) for r in runs],
        "cold_frames_per_second": round(n / runs[0][0], 1),
        "frames_per_second": round(n / wall, 1),
        "extract_frames_per_second": best["extract_frames_per_second"],
        "cpu_ms_per_frame": round(1000 * cpu / n, 2),
        "stage_seconds": best["seconds"],
        "stage_frames_per_second": best["stage_frames_per_second"],
        "deflate": best["deflate"],
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
