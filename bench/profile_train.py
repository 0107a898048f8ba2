"""Profile `minerf train` itself over a window of steps: where a training step's time goes
beyond the step that bench_vanilla_step.py times (drawing the batch, Adam, occupancy-grid
updates, host syncs).

    python bench/profile_train.py --out OUT [--from-step 300] [--steps 48] -- train --ids STORE -o RUN ...

Everything after ``--`` is passed to ``minerf`` (its -q is added). The profiler records
steps [from, from + steps) of the run (one step = one batch drawn); OUT/profile_train.txt gets
the CUDA kernels and the host-side calls by total time, OUT/profile_train.json the GPU
kernel time per step and the window's wall time per step (under the profiler, which slows the
host several-fold: the real rate is the run's own, e.g. gpu_step_modes.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--from-step", type=int, default=300)
    p.add_argument("--steps", type=int, default=48)
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from minerf_cli import training
    from minerf_cli.app import main as minerf

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                   schedule=schedule(wait=args.from_step - 1, warmup=1, active=args.steps, repeat=1))
    draw = training.draw_batch
    marks: dict[str, float] = {}
    count = [0]

    def draw_batch(*a, **k):  # one call per training step
        if count[0] == args.from_step:
            marks["start"] = time.perf_counter()
        if count[0] == args.from_step + args.steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks["end"] = time.perf_counter()
        count[0] += 1
        prof.step()
        return draw(*a, **k)

    training.draw_batch = draw_batch
    sys.argv = ["minerf", "-q", *rest]
    with prof:
        try:
            minerf()
            code = 0
        except SystemExit as exc:  # (typer exits)
            code = exc.code
    if "end" not in marks:
        print(f"the run ended before step {args.from_step + args.steps}: give it more steps", file=sys.stderr)
        return 1
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events  # kernels, copies and memsets (not the annotated ranges)
                 if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False))
    wall_ms = (marks["end"] - marks["start"]) * 1e3 / args.steps
    gpu_ms = gpu_us / 1e3 / args.steps
    table = events.table(sort_by="self_cuda_time_total", row_limit=45)
    host = events.table(sort_by="self_cpu_time_total", row_limit=30)
    (args.out / "profile_train.txt").write_text(f"{table}\n\nhost side:\n{host}\n")
    result = {"window": [args.from_step, args.from_step + args.steps], "gpu_kernel_ms_per_step": round(gpu_ms, 3),
              "wall_ms_per_step_profiled": round(wall_ms, 3), "minerf_exit": code}
    (args.out / "profile_train.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
