#!/usr/bin/env python
"""Forward + backward speed of the NeRF fields: VanillaDynamicField vs FastField (hash grid).

    python bench/bench_fields.py [--rays 2048] [--samples 192] [--device cuda] [--steps 20]
                                 [--bf16] [--fields vanilla fast] [--cond-dim 53] [--latent-dim 32]

Each step: field(x, viewdir, cond, latent) on R rays x S samples, loss = mean density +
mean rgb, backward (grads set to None between steps; no optimiser step). Points lie on
random chords of the head box, sorted along each ray (the memory-access pattern of real
samples); one frame per step, so cond and latent are shared (C,) / (L,) codes. Two warm-up
steps are not timed. Prints one JSON line per field: ms per step, points/s, peak memory
(CUDA: torch.cuda.max_memory_allocated; CPU: the process's max RSS, which includes
everything before the step), parameter count. --bf16 runs the steps under
torch.autocast(device, dtype=torch.bfloat16).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minerf_cli.nerf.fast_field import FastField  # noqa: E402
from minerf_cli.nerf.field import HEAD_BOX_MAX, HEAD_BOX_MIN, VanillaDynamicField  # noqa: E402


def make_inputs(rays: int, samples: int, cond_dim: int, latent_dim: int, device: torch.device, seed: int = 0):
    """Points (R, S, 3) on random chords of the head box, unit view directions (R, 3), codes."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(HEAD_BOX_MIN), torch.tensor(HEAD_BOX_MAX)
    a = lo + (hi - lo) * torch.rand(rays, 3, generator=g)
    b = lo + (hi - lo) * torch.rand(rays, 3, generator=g)
    t = torch.rand(rays, samples, generator=g).sort(-1).values
    x = a[:, None, :] + t[..., None] * (b - a)[:, None, :]
    v = torch.nn.functional.normalize(b - a + 1e-6, dim=-1)
    cond, latent = torch.randn(cond_dim, generator=g), torch.randn(latent_dim, generator=g)
    return [z.to(device) for z in (x, v, cond, latent)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    if name == "vanilla":
        f = VanillaDynamicField(args.cond_dim, args.latent_dim)
    else:
        f = FastField(args.cond_dim, args.latent_dim)
    f = f.to(device)
    x, v, cond, latent = make_inputs(args.rays, args.samples, args.cond_dim, args.latent_dim, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            density, rgb = f(x, v, cond, latent)
            loss = density.float().mean() + rgb.float().mean()
        loss.backward()
        for p in f.parameters():
            p.grad = None

    for _ in range(args.warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / args.steps
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    n = args.rays * args.samples
    return {"field": name, "device": str(device), "bf16": args.bf16, "rays": args.rays, "samples": args.samples,
            "points": n, "steps": args.steps, "ms_per_step": round(dt * 1e3, 2),
            "points_per_s": round(n / dt), "peak_mem_mb": round(peak_mb, 1),
            "peak_mem_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
            "params": sum(p.numel() for p in f.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rays", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=192)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(device, dtype=torch.bfloat16)")
    ap.add_argument("--fields", nargs="+", choices=["vanilla", "fast"], default=["vanilla", "fast"])
    ap.add_argument("--cond-dim", type=int, default=53)
    ap.add_argument("--latent-dim", type=int, default=32)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    for name in args.fields:
        print(json.dumps(bench(name, args, device)), flush=True)


if __name__ == "__main__":
    main()
