"""The ``demo`` stage: the whole pipeline on synthetic talking heads the project renders itself.

synth -> prep -> fit3dmm -> train (one network for all identities) -> transfer (identity 1
with identity 0's expressions, side by side) and reconstruction of identity 1's held-out
frames -> evaluate. Sized for the device found: a small fast-field run on the CPU (a few
minutes), a larger one on a GPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .devices import resolve_device
from .errors import UsageError
from .output import log


@dataclass
class DemoSize:
    ids: int
    seconds: float
    size: int
    steps: int
    rays: int
    samples: tuple[int, int]
    transfer_frames: int
    field_options: dict


# The CPU size runs in about 3 minutes on 2 cores (a hash grid in plain PyTorch is slow on a
# CPU: a small one); the GPU size in about 3 minutes.
CPU = DemoSize(ids=3, seconds=1.6, size=192, steps=1500, rays=512, samples=(16, 16), transfer_frames=20,
               field_options={"levels": 4, "log2_table": 14, "max_res": 192, "hidden": 32, "color_hidden": 32})
GPU = DemoSize(ids=4, seconds=6.0, size=512, steps=3000, rays=4096, samples=(64, 64), transfer_frames=75,
               field_options={})


def demo(out: Path, device: str = "auto", steps: int | None = None, seed: int = 0, force: bool = False) -> dict:
    """Run the demo into ``out``; returns the JSON summary (paths of videos and metrics)."""
    from .evaluate import EvalOptions, evaluate
    from .fit3dmm import fit_store
    from .nerf.model import ModelConfig
    from .prep import PrepOptions, prep
    from .synth import synthesize
    from .tracking import FitConfig
    from .train import train
    from .training import TrainConfig
    from .transfer import transfer

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out}: directory is not empty (use --force to replace the demo's files)")
    if not out.parent.exists():
        raise UsageError(f"{out}: directory {out.parent} does not exist")
    dev = resolve_device(device)
    size = GPU if dev.type == "cuda" else CPU
    t0 = time.perf_counter()
    out.mkdir(exist_ok=True)
    log(f"demo on {dev}: {size.ids} synthetic identities of {size.seconds:g} s at {size.size} px, {steps or size.steps} steps")
    clips = synthesize(out / "clips", ids=size.ids, seconds=size.seconds, size=size.size, fps=25.0, seed=seed, force=force)
    stores = []
    (out / "stores").mkdir(exist_ok=True)
    for clip in clips:
        path = out / "stores" / (Path(clip["video"]).stem + ".h5")
        prep(Path(clip["video"]), path, PrepOptions(size=size.size, force=force))
        fit_store(path, FitConfig(), force=True)
        stores.append(path)
    model_cfg = ModelConfig(field="fast", n_coarse=size.samples[0], n_fine=size.samples[1], shared_field=True,
                            field_options=dict(size.field_options), occupancy_resolution=-1)
    n_steps = steps or size.steps
    cfg = TrainConfig(steps=n_steps, rays=size.rays, frames_per_step=2, lr=1e-3, lr_final=1e-4, grid_lr_scale=10.0,
                      val_every=n_steps, checkpoint_every=n_steps, log_every=max(n_steps // 20, 1), test_frames=-1,
                      seed=seed)
    run = out / "run"
    summary = train(stores, run, model_cfg, cfg, device=str(dev), force=True)
    a, b = stores[0].stem, stores[1].stem
    video = out / f"{b}_with_{a}_expressions.mp4"
    n_tr = min(size.transfer_frames, int(round(size.seconds * 25.0)))
    tr = transfer(run, b, stores[0], output=video, frames=f"0:{n_tr}", store_out=out / f"{b}_with_{a}_expressions.h5",
                  side_by_side=True, device=str(dev), force=True)
    rec = transfer(run, b, stores[1], output=out / f"{b}_heldout_reconstruction.mp4",
                   store_out=out / f"{b}_heldout_reconstruction.h5", device=str(dev), force=True)
    metrics = {
        "reconstruction": evaluate([Path(rec["store"])], stores[1], EvalOptions()),
        "transfer": evaluate([Path(tr["store"])], stores[1], EvalOptions(identity_only=True, driving=stores[0])),
    }
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    return {
        "command": "demo", "output": str(out), "device": str(dev), "identities": [s.stem for s in stores],
        "run": str(run), "steps": summary["steps"], "train_s": summary["wall_s"],
        "mean_test_psnr": summary["mean_test_psnr"], "transfer_video": str(video),
        "reconstruction_video": rec["output"], "metrics": str(metrics_path),
        "reconstruction_psnr": metrics["reconstruction"].get("psnr"),
        "transfer_face_distance": metrics["transfer"].get("face_distance"),
        "total_s": round(time.perf_counter() - t0, 1),
    }
