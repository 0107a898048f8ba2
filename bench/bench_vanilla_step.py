"""Time one training step of the vanilla field at the paper's configuration (issue 5).

    python bench/bench_vanilla_step.py --out OUT [--profile]

The paper's step: 2048 rays of one frame, 64 stratified samples through the coarse
network, 128 importance samples, the fine network on all 192, bf16 autocast, fused Adam.
Variants, each timed over --steps steps after a warm-up (ms per step, steps/s):

* ``paper``: every sample through the networks (what `minerf train --no-pack` runs);
* ``packed``: the networks run only at samples in occupied cells of the occupancy grid
  (what `minerf train` runs after the grid's first update, :mod:`minerf_cli.nerf.packing`);
* ``+graph``: the step's forward and backward replayed as a CUDA graph
  (:mod:`minerf_cli.step_runner`, what `minerf train` does on CUDA).
  The grid here is a head-sized ellipsoid (the ICT neutral mesh's bounds) inside the
  field's box, dilated by one cell like a trained grid; the rays cover the image of the
  box from 60 cm, as the trainer draws them. The share of samples kept is reported (the
  real share depends on the person and is reported by `bench_speed.py` runs).

A ``-unlinked`` suffix runs the fused layers without :class:`minerf_cli.nerf.fused_mlp.ReluLink`
(each layer masks its own ReLU gradient in a pass of its own, as before the links);
``--blocks`` sets ``fused_mlp.LAYER_GRAD_BLOCKS`` (see bench/bench_fused_mlp.py).

--profile writes OUT/profile_VARIANT.txt: the CUDA kernels by total time.
Writes OUT/vanilla_step.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from minerf_cli.nerf import fused_mlp

LINK = fused_mlp.ReluLink


def head_grid(model) -> None:
    """Mark an ellipsoid of the ICT neutral head's size occupied (dilated), as if updated."""
    from minerf_cli.nerf.occupancy import dilate

    grid = model.occupancy
    G = grid.resolution
    r = torch.arange(G, device=grid.density.device, dtype=torch.float32) + 0.5
    ijk = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1)
    x = grid.box_min + ijk * grid.cell
    center = torch.tensor([0.0, -2.4, 1.95], device=x.device)
    radii = torch.tensor([12.4, 16.9, 11.15], device=x.device)
    inside = (((x - center) / radii) ** 2).sum(-1) <= 1.0
    grid.occupied.copy_(dilate(inside))
    grid.updates.fill_(1)


def make_step(model, opt, budget, R: int, dev, graphs: bool, frames: int = 1):
    """One training step through the trainer's own code (training.batch_loss, StepRunner)."""
    from minerf_cli.step_runner import StepRunner
    from minerf_cli.training import Batch, TrainConfig, batch_loss

    g = torch.Generator(device=dev).manual_seed(0)
    bmin, bmax = torch.tensor(model.cfg.box_min, device=dev), torch.tensor(model.cfg.box_max, device=dev)
    origin = torch.tensor([0.0, 0.0, 60.0], device=dev)
    F = frames
    expression = torch.rand(F, 1, model.cfg.expr_dim, device=dev)
    video, frames = torch.zeros(F, dtype=torch.long, device=dev), torch.arange(F, device=dev)[:, None]
    per = tuple(R // F + (1 if k < R % F else 0) for k in range(F))
    cfg = TrainConfig(rays=R)
    precision = "bf16" if dev.type == "cuda" else "fp32"
    runner = StepRunner(lambda batch, key: batch_loss(model, batch, cfg, dev, precision, key), opt, dev, graphs=graphs)

    def step():
        target = bmin + (bmax - bmin) * torch.rand(R, 3, device=dev, generator=g)
        target[:, 2] = 0.0
        d = torch.nn.functional.normalize(target - origin, dim=-1)
        bg, gt = torch.rand(R, 3, device=dev, generator=g), torch.rand(R, 3, device=dev, generator=g)
        batch = Batch(origin.expand(R, 3), d, gt, bg, None, video, frames, expression, per)
        _, _, counts = runner(batch, None if budget is None else tuple(budget.capacity))
        opt.step()
        if budget is not None:
            budget.record(counts)

    return step, runner


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_variant(name: str, args, dev) -> dict:
    from minerf_cli.nerf.model import MINeRF, ModelConfig
    from minerf_cli.nerf.packing import PackBudget
    from minerf_cli.train import FIELD_DEFAULTS, FIELD_OPTIONS

    fused_mlp.ReluLink = (lambda cols: None) if "-unlinked" in name else LINK  # (field.py imports it per call)
    torch.manual_seed(0)
    model = MINeRF(ModelConfig(field=args.field, frames_per_video=[100], occupancy_resolution=64,
                               field_options=dict(FIELD_OPTIONS[args.field]), **FIELD_DEFAULTS[args.field])).to(dev)
    head_grid(model)
    R = args.rays
    n = model.cfg.n_coarse
    budget = PackBudget((R * (n - 1), R * (n + model.cfg.n_fine - 1))) if name.startswith("packed") else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if dev.type == "cuda" else {}))
    step, runner = make_step(model, opt, budget, R, dev, graphs="+graph" in name, frames=args.frames_per_step)
    for _ in range(args.warmup):
        step()
    shares = budget.adapt() if budget is not None else {}
    for _ in range(5):  # a new capacity: warm-up and capture again
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    host_s = (time.perf_counter() - t0) / args.steps  # enqueue time per step (the GPU may lag behind)
    sync(dev)
    step_s = (time.perf_counter() - t0) / args.steps
    row = {"variant": name, "ms_per_step": round(step_s * 1e3, 2), "steps_per_s": round(1 / step_s, 1),
           "host_ms_per_step": round(host_s * 1e3, 2), "graph_replayed": runner.graphed, "graph_failure": runner.failure}
    if budget is not None:
        row.update(kept_share=round(budget.adapt().get("kept", shares.get("kept", 0.0)), 4),
                   capacity=list(budget.capacity))
    if dev.type == "cuda":
        row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(5):
                step()
            sync(dev)
        key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
        (args.out / f"profile_{name.replace('+', '_')}.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=40))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--variants", default="paper,packed,paper+graph,packed+graph")
    p.add_argument("--field", default="vanilla", help="vanilla (the paper's step) or fast")
    p.add_argument("--rays", type=int, default=2048)
    p.add_argument("--frames-per-step", type=int, default=1)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--blocks", help="fused_mlp.LAYER_GRAD_BLOCKS to use, e.g. 64,64,8,3,0 (bench_fused_mlp.py's names)")
    args = p.parse_args(argv)
    if args.blocks:
        fused_mlp.LAYER_GRAD_BLOCKS = fused_mlp.parse_blocks(args.blocks)
    from minerf_cli.devices import resolve_device

    dev = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants.split(","):
        rows.append(time_variant(name, args, dev))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "rays": args.rays,
              "layer_grad_blocks": list(fused_mlp.LAYER_GRAD_BLOCKS),
              "variants": rows}
    (args.out / "vanilla_step.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
