"""Speed and scale benchmark (issue 5): train vanilla and fast fields on the same data, time them.

    python bench/bench_speed.py --synth DIR --real DIR --runs fast:syn1,fast:syn4,fast:syn16,fast:real1 \
        --out bench_out [--cap-s 240] [--flops]

Each run (FIELD:DATA[:pack], DATA = synN (the first N stores of --synth) or realN (of
--real); ``pack``: packed passes (`minerf train --pack`) instead of every sample, as the paper)
trains in its own subprocess (clean peak-memory figures) until its held-out face-crop
PSNR reaches --target (28 dB) or its training time reaches --cap-s, and reports:
steps/s, rays/s, training seconds to 26 and 28 dB test PSNR (evaluation time excluded),
final test PSNR, render frames/s at the stores' size (model time, 8 frames a batch, the
occupancy grid), peak GPU and host memory. Test PSNR: the mean face-crop PSNR of
--eval-frames held-out frames of each of (at most 8) identities, every --eval-every steps.

--flops: the FLOP count of one vanilla training step at the paper's configuration (2048
rays, 64 + 128 samples, fine network on 192), measured with torch's FlopCounterMode, its
time in bf16, and the GPU's measured bf16 matmul rate (8192^3 matmuls).

Writes OUT/results.json, OUT/results.csv, OUT/psnr_vs_time.png; logs on stderr.
Fast-field settings are bench/gpu_real.sh's: 4096 rays from 2 frames per step, lr 1e-3 ->
1e-4, grid lr x10; vanilla: the paper's (2048 rays, 1 frame, 5e-4 -> 5e-5).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

TARGETS = (26.0, 28.0)


def stores_for(data: str, synth: Path | None, real: Path | None) -> list[Path]:
    kind, n = data.rstrip("0123456789"), int(data[len(data.rstrip("0123456789")):] or 1)
    root = {"syn": synth, "real": real}.get(kind)
    if root is None:
        raise SystemExit(f"{data}: give --{'synth' if kind == 'syn' else 'real'} DIR")
    stores = sorted(Path(root).glob("*.h5"))[:n]
    if len(stores) < n:
        raise SystemExit(f"{data}: {root} has {len(stores)} stores, need {n}")
    return stores


def test_psnr(model, sources, frames_per_id: int, smooth: bool = False, sampler: str = "auto") -> float:
    from minerf_cli.rendering import face_psnr

    values = []
    for video, clip in sources[:8]:
        idx = clip.test_idx[np.linspace(0, len(clip.test_idx) - 1, frames_per_id).round().astype(int)]
        v = face_psnr(model, video, clip, np.unique(idx), smooth, sampler=sampler)
        if v is not None:
            values.append(v)
    return float(np.mean(values))


def render_inputs(model, sources, device, n_frames: int):
    """The first identity's first n_frames frames as render_batch takes them: clip, idx (n,),
    cond (n, C), latent (n, L), poses (n, 4, 4), backgrounds (n, H, W, 3) on ``device``."""
    from minerf_cli.rendering import frame_latents, sequence_codes

    video, clip = sources[0]
    idx = np.arange(min(n_frames, clip.n_frames))
    with torch.no_grad():
        lat = frame_latents(model, video, idx, clip.train_idx)
        cond, lat = sequence_codes(model, clip.expression[torch.as_tensor(idx)].to(device), video, lat, False)
    poses = clip.camera_from_head[torch.as_tensor(idx)].to(device)
    bgs = torch.stack([clip.background(int(n)) for n in idx]).to(device)
    return clip, idx, cond, lat, poses, bgs


def render_fps(model, sources, device, precision, n_frames: int = 32, batch: int = 8,
               samplers: tuple[str, ...] | None = None) -> dict:
    from minerf_cli.devices import autocast
    from minerf_cli.rendering import render_batch

    clip, idx, cond, lat, poses, bgs = render_inputs(model, sources, device, n_frames)
    out = {}
    for sampler in samplers or (["grid", "pdf"] if model.uses_marching() else ["pdf"]):
        times = []
        n = len(idx) if sampler == "grid" else min(len(idx), batch)  # the pdf sampler is slow: one batch
        for rep in range(2):  # the first pass warms up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            evaluated = 0
            for s in range(0, n, batch):
                sl = slice(s, s + batch)
                with torch.no_grad(), autocast(device, precision):
                    img = render_batch(model, clip.K, poses[sl], cond[sl], lat[sl], bgs[sl], sampler=sampler)
                    img = (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()
                if model.last_march is not None and sampler == "grid":
                    evaluated += model.last_march.evaluated
            times.append(time.perf_counter() - t0)
        out[sampler] = {"fps": round(n / times[-1], 2), "frames": n, "size": list(clip.size)}
        if sampler == "grid":
            out[sampler]["samples_per_frame"] = int(evaluated / n)
    return out


RENDER_SETTINGS = {  # name: (occupancy alpha threshold, dilation, min transmittance, march steps,
    # preview stride of the two-pass renderer (1: one pass), fused marching kernels)
    "default": (0.005, True, 1e-2, 192, 4, True),
    "no_preview": (0.005, True, 1e-2, 192, 1, True),
    "pytorch": (0.005, True, 1e-2, 192, 4, False),
    "pytorch_no_preview": (0.005, True, 1e-2, 192, 1, False),
    "t0.001_s256_no_preview": (0.005, True, 1e-3, 256, 1, True),
}


def render_sweep(model, sources, device, precision, eval_frames: int, compile_field: bool) -> dict:
    """Marched rendering under each of RENDER_SETTINGS: frames/s and held-out PSNR."""
    out = {}
    steps0 = model.cfg.march_steps
    fine = model.fine
    if compile_field:
        model.fine = torch.compile(fine, dynamic=True)
        try:
            render_fps(model, sources, device, precision, n_frames=8, samplers=("grid",))
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"torch.compile failed ({type(exc).__name__}: {exc}); sweeping without it", file=sys.stderr)
            model.fine = fine
    from minerf_cli import rendering
    from minerf_cli.nerf import march_triton

    stride0 = rendering.PREVIEW_STRIDE
    try:
        for name, (alpha, dil, tmin, steps, stride, fused) in RENDER_SETTINGS.items():
            rendering.PREVIEW_STRIDE, march_triton.enabled = stride, fused
            model.cfg.march_steps = steps
            model.occupancy.set_threshold(alpha, model.march_step, dil)
            model.march_options = {"min_transmittance": tmin}
            r = render_fps(model, sources, device, precision, samplers=("grid",))["grid"]
            r["test_psnr"] = round(test_psnr(model, sources, eval_frames, sampler="grid"), 3)
            r["occupied_fraction"] = round(float(model.occupancy.fraction()), 4)
            out[name] = r
            print(f"render {name}: {r}", file=sys.stderr, flush=True)
    finally:
        rendering.PREVIEW_STRIDE, march_triton.enabled = stride0, True
        model.fine = fine
        model.cfg.march_steps = steps0
        model.occupancy.set_threshold(0.005, model.march_step, True)
        model.march_options = {}
    return out


def one_run(args) -> dict:
    from minerf_cli.devices import resolve_device, resolve_precision
    from minerf_cli.nerf.model import MINeRF, ModelConfig
    from minerf_cli.train import FIELD_DEFAULTS, FIELD_OPTIONS, load_sources
    from minerf_cli.training import TrainConfig, fit

    field, data, *opts = args.one.split(":")
    stores = stores_for(data, args.synth, args.real)
    dev = resolve_device(args.device)
    precision = resolve_precision("auto", dev)
    clips = load_sources(stores, dev)
    torch.manual_seed(0)
    fast = field == "fast"
    from minerf_cli.train import parse_field_options

    options = {**FIELD_OPTIONS[field], **parse_field_options(field, args.field_option or [])}
    mcfg = ModelConfig(field=field, **FIELD_DEFAULTS[field], field_options=options,
                       expr_dim=clips[0].expression.shape[1],
                       frames_per_video=[c.n_frames for c in clips], occupancy_resolution=args.grid)
    model = MINeRF(mcfg).to(dev)
    est_rate = 30.0 if fast else 20.0  # steps/s, for the learning-rate schedule's length
    steps = args.steps or int(args.cap_s * est_rate)
    cfg = TrainConfig(steps=steps, rays=args.rays or (4096 if fast else 2048),
                      frames_per_step=args.frames_per_step or (2 if fast else 1),
                      lr=1e-3 if fast else 5e-4, lr_final=1e-4 if fast else 5e-5, grid_lr_scale=10.0,
                      smooth_after=0, val_every=10**9, checkpoint_every=10**9, log_every=args.log_every, seed=0,
                      grid_warmup=args.grid_warmup, pack="pack" in opts)
    sources = list(enumerate(clips))
    curve: list[dict] = []
    reached: dict[str, float | None] = {f"time_to_{int(t)}db_s": None for t in TARGETS}

    def callback(step: int, train_s: float) -> bool:
        if step % args.eval_every and train_s < args.cap_s:
            return False
        psnr = test_psnr(model, sources, args.eval_frames)
        model.train()
        curve.append({"step": step, "train_s": round(train_s, 2), "test_psnr": round(psnr, 3)})
        print(f"[{args.one}] step {step} {train_s:.1f} s test {psnr:.2f} dB", file=sys.stderr, flush=True)
        for t in TARGETS:
            key = f"time_to_{int(t)}db_s"
            if reached[key] is None and psnr >= t:
                reached[key] = round(train_s, 2)
        return train_s >= args.cap_s or (reached[f"time_to_{int(args.target)}db_s"] is not None
                                         and train_s >= args.min_s)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    run = Path(args.out) / "runs" / args.one.replace(":", "_")
    run.mkdir(parents=True, exist_ok=True)
    result = fit(model, sources, cfg, run, dev, precision, callback=callback)
    peak_train_gpu = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    model.eval()
    fps = render_fps(model, sources, dev, precision)
    sweep = render_sweep(model, sources, dev, precision, args.eval_frames, args.compile) if (
        args.sweep and model.uses_marching()) else None
    with torch.no_grad():  # the same held-out frames rendered with each sampler
        by_sampler = {s: round(test_psnr(model, sources, args.eval_frames, sampler=s), 3)
                      for s in (["grid", "pdf"] if model.uses_marching() else ["pdf"])}
    row = {"run": args.one, "field": field, "field_options": options, "identities": len(stores), "frames": sum(c.n_frames for c in clips),
           "rays": cfg.rays, "frames_per_step": cfg.frames_per_step, "steps": result["steps"], "train_s": result["train_s"], "steps_per_s": result["steps_per_s"],
           "rays_per_s": round(result["steps_per_s"] * cfg.rays), "pack": cfg.pack,
           "packed_share": result.get("packed_share"), "pack_dropped_max": result.get("pack_dropped_max"),
           "cuda_graphs": result.get("cuda_graphs"), "graph_captures": result.get("graph_captures"), **reached,
           "final_test_psnr": curve[-1]["test_psnr"] if curve else None, "test_psnr_by_sampler": by_sampler,
           "render": fps, "render_sweep": sweep, "occupied_fraction": None if model.occupancy is None else round(float(model.occupancy.fraction()), 4),
           "peak_gpu_gb_train": None if peak_train_gpu is None else round(peak_train_gpu, 2),
           "peak_host_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "curve": curve}
    return row


def flops_report(device: str) -> dict:
    """FLOPs and time of one vanilla training step at the paper's configuration; bf16 matmul rate."""
    from torch.utils.flop_counter import FlopCounterMode

    from minerf_cli.devices import autocast, resolve_device
    from minerf_cli.nerf.model import MINeRF, ModelConfig
    from minerf_cli.nerf.render import minerf_loss

    dev = resolve_device(device)
    torch.manual_seed(0)
    model = MINeRF(ModelConfig(field="vanilla", frames_per_video=[100], occupancy_resolution=0)).to(dev)
    R = 2048
    o = torch.tensor([0.0, 0.0, 60.0], device=dev).expand(R, 3)
    d = torch.nn.functional.normalize(torch.randn(R, 3, device=dev) * 0.05 + torch.tensor([0.0, 0.0, -1.0], device=dev), dim=-1)
    cond = torch.randn(model.conditioning.out_dim, device=dev)
    lat = torch.randn(model.cfg.latent_dim, device=dev)
    bg, gt = torch.rand(R, 3, device=dev), torch.rand(R, 3, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **({"fused": True} if dev.type == "cuda" else {}))

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(dev, "bf16" if dev.type == "cuda" else "fp32"):
            out = model.render_rays(o, d, cond, lat, bg)
        minerf_loss(out["rgb"].float(), gt, lat, model.identity.table.weight[0], out["rgb_coarse"])["total"].backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(5):
        step()
    n = 30 if dev.type == "cuda" else 2
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    step_s = (time.perf_counter() - t0) / n
    out = {"vanilla_step_tflop": round(flops / 1e12, 3), "vanilla_step_ms_bf16": round(step_s * 1e3, 2),
           "vanilla_steps_per_s": round(1 / step_s, 2), "paper_steps_per_s": 2.8}
    if dev.type == "cuda":
        a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        torch.cuda.synchronize(dev)
        rate = 20 * 2 * 8192**3 / (time.perf_counter() - t0)
        out.update(bf16_matmul_tflops=round(rate / 1e12, 1),
                   vanilla_share_of_bf16_rate=round(flops / step_s / rate, 4))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        c = r.get("curve") or []
        if c:
            ax.plot([p["train_s"] for p in c], [p["test_psnr"] for p in c], marker=".", label=r["run"])
    for t in TARGETS:
        ax.axhline(t, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("training time (s, evaluation excluded)")
    ax.set_ylabel("held-out face-crop PSNR (dB)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--synth", type=Path)
    p.add_argument("--real", type=Path)
    p.add_argument("--runs", default="fast:syn1,fast:syn4,fast:syn16,fast:real1")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--cap-s", type=float, default=240.0, help="training seconds per run at most")
    p.add_argument("--steps", type=int, default=0, help="schedule length (default: cap-s x 30 fast, x 20 vanilla)")
    p.add_argument("--target", type=float, default=28.0)
    p.add_argument("--min-s", type=float, default=0.0, help="train at least this long even once the target is reached")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-frames", type=int, default=2)
    p.add_argument("--grid", type=int, default=64, help="occupancy grid resolution (0: none)")
    p.add_argument("--rays", type=int, default=0, help="rays per step (default 4096 fast, 2048 vanilla)")
    p.add_argument("--frames-per-step", type=int, default=0, help="frames the rays of a step come from (default 2 fast, 1 vanilla)")
    p.add_argument("--grid-warmup", type=int, default=256, help="first occupancy-grid update at this step")
    p.add_argument("--log-every", type=int, default=50, help="steps between loss reads (and evaluation checks)")
    p.add_argument("--field-option", action="append", help="KEY=VALUE for the field (as minerf train's), repeatable")
    p.add_argument("--device", default="auto")
    p.add_argument("--flops", action="store_true")
    p.add_argument("--sweep", action="store_true", help="also time marched rendering under other settings")
    p.add_argument("--compile", action="store_true", help="torch.compile the field for the sweep")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one_run(args)))
        return 0
    rows, extra = [], {}
    if args.flops:
        extra = flops_report(args.device)
        print(json.dumps(extra), file=sys.stderr, flush=True)
    for run in [r for r in args.runs.split(",") if r]:
        cmd = [sys.executable, __file__, "--one", run, "--out", str(args.out), "--cap-s", str(args.cap_s),
               "--steps", str(args.steps), "--target", str(args.target), "--min-s", str(args.min_s), "--eval-every", str(args.eval_every),
               "--eval-frames", str(args.eval_frames), "--grid", str(args.grid), "--device", args.device,
               "--grid-warmup", str(args.grid_warmup), "--log-every", str(args.log_every), "--rays", str(args.rays),
               "--frames-per-step", str(args.frames_per_step)]
        cmd += [f for f, on in (("--sweep", args.sweep), ("--compile", args.compile)) if on]
        for opt in args.field_option or []:
            cmd += ["--field-option", opt]
        for k in ("synth", "real"):
            if getattr(args, k):
                cmd += [f"--{k}", str(getattr(args, k))]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if proc.returncode != 0:
            print(f"{run}: failed (exit {proc.returncode})", file=sys.stderr)
            rows.append({"run": run, "error": proc.returncode})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), file=sys.stderr, flush=True)
        (args.out / "results.json").write_text(json.dumps({"runs": rows, **extra}, indent=1))
    (args.out / "results.json").write_text(json.dumps({"runs": rows, **extra}, indent=1))
    keys = ["run", "identities", "frames", "steps", "train_s", "steps_per_s", "rays_per_s", "time_to_26db_s",
            "time_to_28db_s", "final_test_psnr", "render_fps_grid", "render_fps_pdf", "samples_per_frame",
            "occupied_fraction", "peak_gpu_gb_train", "peak_host_gb"]
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        for r in rows:
            rend = r.get("render", {})
            flat = {**r, "render_fps_grid": rend.get("grid", {}).get("fps"), "render_fps_pdf": rend.get("pdf", {}).get("fps"),
                    "samples_per_frame": rend.get("grid", {}).get("samples_per_frame")}
            w.writerow([flat.get(k) for k in keys])
    plot([r for r in rows if "curve" in r], args.out / "psnr_vs_time.png")
    print(json.dumps({"runs": [{k: v for k, v in r.items() if k != "curve"} for r in rows], **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
