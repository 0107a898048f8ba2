"""Rendering speed (issue 5): train a fast field on one store, then time rendering settings.

    python bench/bench_render.py --store .gpudata/r4/styletalk_KristiNoem_av.h5 --steps 4000 \
        --mask 0,0.01 --out gpu_out/render [--profile]

For each --mask weight (``TrainConfig.mask_weight``: the loss asking each ray's opacity to
match the head mask, ``nerf.render.mask_loss``) one fast field is trained in this process with the README's recipe
(4096 rays from 2 frames a step, lr 1e-3 -> 1e-4, ``--latent-dim 0 --mouth-rays 0.3``), then:

* held-out face-crop PSNR with the occupancy-grid renderer and with the training sampler;
* render frames/s at the store's size under each setting of SETTINGS (preview stride of the
  two-pass renderer, which fused kernels; model time: rays,
  rendering, compositing, uint8 copy to the host; 8 frames a batch over --frames frames of
  the clip, its own backgrounds and poses, second pass timed), field evaluations per frame
  and the held-out PSNR under that setting;
* with --profile, the top CUDA kernels of one batch (torch.profiler).

Writes OUT/render.json; logs on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

OCCUPANCY_ALPHA = 0.005  # the grid's opacity threshold per marching step (OccupancyGrid's default)

SETTINGS = {  # name: march options (MINeRF.march_options), rendering.PREVIEW_STRIDE, fused kernels
    # ("none": PyTorch only, "hash": the fused hash encoding only, the renderer of 2026-11-22's
    # first figures, "all": also the fused marching kernels of nerf/march_triton.py), marching
    # steps across the head box's diagonal (the occupancy threshold follows the step)
    "steps192_hash_only": ({}, 4, "hash", 192),
    "steps192": ({}, 4, "all", 192),
    "steps128": ({}, 4, "all", 128),
    "no_preview_192": ({}, 1, "all", 192),
}


def train_one(store: Path, steps: int, mask: float, distortion: float, dev, precision, out: Path):
    from minerf_cli.nerf.model import MINeRF, ModelConfig
    from minerf_cli.train import FIELD_DEFAULTS, FIELD_OPTIONS, load_sources
    from minerf_cli.training import TrainConfig, fit

    clips = load_sources([store], dev)
    torch.manual_seed(0)
    mcfg = ModelConfig(field="fast", **FIELD_DEFAULTS["fast"], field_options=dict(FIELD_OPTIONS["fast"]),
                       expr_dim=clips[0].expression.shape[1], latent_dim=0,
                       frames_per_video=[c.n_frames for c in clips], occupancy_resolution=64)
    model = MINeRF(mcfg).to(dev)
    cfg = TrainConfig(steps=steps, rays=4096, frames_per_step=2, mouth_fraction=0.3, mask_weight=mask, distortion_weight=distortion,
                      lr=1e-3, lr_final=1e-4, grid_lr_scale=10.0, smooth_after=0, val_every=10**9,
                      checkpoint_every=10**9, log_every=250, seed=0)
    run = out / f"run_mask{mask:g}_dist{distortion:g}"
    run.mkdir(parents=True, exist_ok=True)
    result = fit(model, list(enumerate(clips)), cfg, run, dev, precision)
    model.eval()
    return model, list(enumerate(clips)), result


def opacity_stats(model, sources, dev, precision, n_frames: int = 4) -> dict:
    """How opaque the rendered head is: the grid renderer's opacity inside and outside the
    head mask of held-out frames (means, and the share of head pixels above 0.99)."""
    from minerf_cli.devices import autocast
    from minerf_cli.nerf.rays import head_rays

    video, clip = sources[0]
    H, W = clip.size
    i, j = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    ij = torch.stack([i, j], -1).reshape(-1, 2)
    ins, outs = [], []
    for n in clip.test_idx[:n_frames]:
        o, d = head_rays(clip.K, clip.camera_from_head[int(n)], ij)
        with torch.no_grad(), autocast(dev, precision):
            op = model.render_rays_marched(o, d, model.condition(clip.expression[int(n)][None].to(dev),
                                                                 torch.tensor([video], device=dev))[0],
                                           torch.zeros(model.cfg.latent_dim, device=dev),
                                           torch.zeros(len(o), 3, device=dev))["opacity"]
        head = clip.head_at(int(n), ij)
        ins.append(op[head])
        outs.append(op[~head])
    a, b = torch.cat(ins), torch.cat(outs)
    return {"head_mean": round(float(a.mean()), 4), "head_above_0.99": round(float((a > 0.99).float().mean()), 4),
            "outside_mean": round(float(b.mean()), 4), "outside_above_0.01": round(float((b > 0.01).float().mean()), 4)}


def fused_difference(model, dev, n: int = 1_000_000) -> float | None:
    """Largest |fused - PyTorch| hash-grid feature on n random points (None without CUDA/Triton)."""
    grid = model.fine.grid
    x = torch.rand(n, 3, device=dev)
    with torch.no_grad():
        if not grid.fused_ok(x):
            return None
        fused = grid(x)
        grid.use_fused = False
        ref = grid(x)
        grid.use_fused = True
    return float((fused - ref).abs().max())


def profile_batch(model, sources, dev, precision, batch: int = 8) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    from bench_speed import render_inputs

    from minerf_cli.devices import autocast
    from minerf_cli.rendering import render_batch

    clip, _, cond, lat, poses, bgs = render_inputs(model, sources, dev, batch)
    with torch.no_grad():
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            with autocast(dev, precision):
                img = render_batch(model, clip.K, poses, cond, lat, bgs)
            (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:25]:
        rows.append({"name": e.key[:80], "cuda_ms": round(e.device_time_total / 1e3, 3),
                     "cpu_ms": round(e.cpu_time_total / 1e3, 3), "calls": e.count})
    return rows


def main(argv=None) -> int:
    from bench_speed import render_fps, test_psnr

    from minerf_cli.devices import resolve_device, resolve_precision
    from minerf_cli import rendering
    from minerf_cli.nerf import march_triton

    preview0 = rendering.PREVIEW_STRIDE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--mask", default="0", help="comma-separated mask-loss weights, one run each")
    p.add_argument("--distortion", default="0", help="comma-separated distortion-loss weights, paired with --mask")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--eval-frames", type=int, default=6)
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench_out/render"))
    args = p.parse_args(argv)
    dev = resolve_device(args.device)
    precision = resolve_precision("auto", dev)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    masks = [float(v) for v in args.mask.split(",")]
    dists = [float(v) for v in args.distortion.split(",")]
    n = max(len(masks), len(dists))
    masks, dists = (v * n if len(v) == 1 else v for v in (masks, dists))
    for mask, dist in zip(masks, dists):
        model, sources, result = train_one(args.store, args.steps, mask, dist, dev, precision, args.out)
        row = {"mask_weight": mask, "distortion_weight": dist, "steps": result["steps"], "train_s": result["train_s"],
               "steps_per_s": result["steps_per_s"], "occupied_fraction": round(float(model.occupancy.fraction()), 4),
               "test_psnr_pdf": round(test_psnr(model, sources, args.eval_frames, sampler="pdf"), 3), "settings": {}}
        steps0 = model.cfg.march_steps
        for name, (opts, preview, fused, steps) in SETTINGS.items():
            model.march_options = dict(opts)
            model.cfg.march_steps = steps
            model.occupancy.set_threshold(OCCUPANCY_ALPHA, model.march_step)
            rendering.PREVIEW_STRIDE = preview
            model.fine.grid.use_fused = fused != "none"
            march_triton.enabled = fused == "all"
            t0 = time.perf_counter()
            r = render_fps(model, sources, dev, precision, n_frames=args.frames, samplers=("grid",))["grid"]
            r["test_psnr"] = round(test_psnr(model, sources, args.eval_frames, sampler="grid"), 3)
            r["wall_s"] = round(time.perf_counter() - t0, 2)
            row["settings"][name] = r
            print(f"mask {mask:g} distortion {dist:g} {name}: {r}", file=sys.stderr, flush=True)
        model.march_options = {}
        model.cfg.march_steps = steps0
        model.occupancy.set_threshold(OCCUPANCY_ALPHA, model.march_step)
        rendering.PREVIEW_STRIDE = preview0
        model.fine.grid.use_fused = True
        march_triton.enabled = True
        row["fused_hash_max_abs_diff"] = fused_difference(model, dev)
        row["opacity"] = opacity_stats(model, sources, dev, precision)
        if args.profile:
            row["profile"] = profile_batch(model, sources, dev, precision)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "render.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
