"""Time the fused marching kernels (nerf/march_triton.py) on their own, without training.

    python3 bench/bench_march_kernel.py [--frames 8] [--out OUT]

A fast field with the default options and random weights (a random table: the access
pattern, not the values, sets the time), an occupancy grid holding an ellipsoid about the
size of a head (~30% of the head box's cells), and 512x512 rays from a camera 60 cm in
front of it. For each kernel variant (hash table float32 or float16 pairs, points per
program, warps) it times ``march_render`` over --frames frames of rays (second pass),
reports ms per frame, samples per frame, and the largest difference of the rendered colour
from the PyTorch renderer's. Each variant runs in its own process under --timeout (some
Triton configurations crash or hang on Hopper). Writes OUT/march_kernel.json; needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = [  # (half table, points per program, warps, Hopper wgmma for the dots); each runs in its
    # own process with a time limit: some configurations crash (illegal address) or hang
    (False, 64, 4, False), (False, 128, 4, False), (False, 64, 8, False), (False, 128, 8, False),
    (True, 64, 4, False), (True, 128, 4, False), (False, 64, 4, True), (False, 128, 4, True),
]


def scene(dev, size: int = 512):
    from minerf_cli.nerf.fast_field import FastField
    from minerf_cli.nerf.field import HEAD_BOX_MAX, HEAD_BOX_MIN
    from minerf_cli.nerf.occupancy import OccupancyGrid
    from minerf_cli.nerf.rays import near_far_box

    torch.manual_seed(0)
    field = FastField(cond_dim=53, latent_dim=0).to(dev).eval()
    with torch.no_grad():
        field.grid.table.uniform_(-0.5, 0.5)
    grid = OccupancyGrid(HEAD_BOX_MIN, HEAD_BOX_MAX, resolution=64, step=0.25).to(dev)
    lo, hi = torch.tensor(HEAD_BOX_MIN, device=dev), torch.tensor(HEAD_BOX_MAX, device=dev)
    c = (torch.arange(64, device=dev) + 0.5) / 64
    u = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1) * 2 - 1  # cell centres in [-1, 1]^3
    grid.occupied.copy_((u / torch.tensor([0.8, 0.85, 0.8], device=dev)).pow(2).sum(-1) < 1)
    grid.updates += 1
    j, i = torch.meshgrid(torch.arange(size, device=dev), torch.arange(size, device=dev), indexing="xy")
    centre = (lo + hi) / 2
    origin = centre + torch.tensor([0.0, 0.0, 60.0], device=dev)
    px = torch.stack([(j.float() - size / 2) / size * 50, (i.float() - size / 2) / size * 50,
                      torch.full_like(j.float(), -60.0)], -1).reshape(-1, 3)  # a 50 cm view at 60 cm
    dirs = torch.nn.functional.normalize(centre + px - origin, dim=-1)
    origins = origin.expand_as(dirs).contiguous()
    near, far, hit = near_far_box(origins, dirs, HEAD_BOX_MIN, HEAD_BOX_MAX)
    far = torch.where(hit & (far > near), far, near)
    return field, grid, origins, dirs, near, far


def run_one(variant, frames: int, steps: int) -> dict:
    from minerf_cli.nerf import march_triton
    from minerf_cli.nerf.marching import march_render

    half, block, warps, wgmma = variant
    dev = torch.device("cuda")
    field, grid, o, d, near, far = scene(dev)
    step = float(((grid.cell * 64) ** 2).sum().sqrt()) / steps
    cond, latent = torch.randn(53, device=dev), torch.zeros(0, device=dev)
    bg = torch.ones_like(o)
    chunk = 262144

    def frame():
        out, samples = [], 0
        for s in range(0, len(o), chunk):
            sl = slice(s, s + chunk)
            rgb, _, stats = march_render(field, grid, o[sl], d[sl], near[sl], far[sl], cond, latent, bg[sl],
                                         step, steps)
            out.append(rgb)
            samples += stats.evaluated
        return torch.cat(out), samples

    march_triton.enabled = False
    ref, ref_samples = frame()
    march_triton.enabled = True
    f = march_triton.FieldKernel
    f.half_table, f.block, f.warps, f.wgmma = half, block, warps, wgmma
    for rep in range(2):  # the first pass compiles and warms up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(frames):
            img, samples = frame()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return {"half_table": half, "block": block, "warps": warps, "wgmma": wgmma,
            "ms_per_frame": round(dt / frames * 1e3, 2), "samples_per_frame": samples,
            "pytorch_samples_per_frame": ref_samples, "max_diff_vs_pytorch": round(float((img - ref).abs().max()), 5)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=192, help="marching steps across the head box")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds per variant (compilation included)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant, print its JSON
    p.add_argument("--out", type=Path, default=Path("bench_out/march_kernel"))
    args = p.parse_args(argv)
    if args.one:
        half, block, warps, wgmma = json.loads(args.one)
        print(json.dumps(run_one((half, block, warps, wgmma), args.frames, args.steps)), flush=True)
        return 0
    rows = []
    for v in VARIANTS:
        cmd = [sys.executable, __file__, "--one", json.dumps(list(v)), "--frames", str(args.frames),
               "--steps", str(args.steps)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
            row = json.loads(lines[-1]) if r.returncode == 0 and lines else \
                {"variant": v, "error": (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1][:200]}
        except subprocess.TimeoutExpired:
            row = {"variant": v, "error": f"no result in {args.timeout:g} s (hung)"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "march_kernel.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
