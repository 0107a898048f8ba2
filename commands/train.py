"""`minerf train --ids STORES... -o RUN`: one MI-NeRF for many identities."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from minerf_cli.errors import UsageError
from minerf_cli.output import command, emit_json


@command
def train(
    stores: Optional[List[Path]] = typer.Argument(None, help="More stores or directories (after --ids)."),
    ids: Optional[List[Path]] = typer.Option(None, "--ids", help="Tracked stores (prep + fit3dmm) or directories of them; one identity per store, named by its file stem."),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory to create (config, checkpoints, metrics, renders)."),
    module: str = typer.Option("m", "--module", help="Conditioning: m (multiplicative), h|h2|h3|h4 (high-degree), baseline (concatenation), a1..a7 (ablations)."),
    field: str = typer.Option("vanilla", "--field", help="vanilla (the paper's 8x256 MLP) or fast (hash grid + small MLPs)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps [default: 20000]. With --resume: continue to this many steps (the learning-rate schedule and the smoothing start are stretched to it) [default: the run's own]."),
    rays: int = typer.Option(2048, "--rays", min=16, help="Rays per step."),
    samples: Optional[str] = typer.Option(None, "--samples", help="COARSE:FINE samples per ray [default: 64:128 vanilla (the paper's), 64:64 fast]."),
    field_option: Optional[List[str]] = typer.Option(None, "--field-option", help="KEY=VALUE passed to the field's constructor, e.g. width=128 (vanilla) or log2_table=17 (fast); repeatable."),
    frames_per_step: int = typer.Option(1, "--frames-per-step", min=1, help="Frames the rays of one step come from (the paper: 1)."),
    mouth_rays: float = typer.Option(0.0, "--mouth-rays", min=0.0, max=1.0, help="Share of each frame's rays drawn around the mouth and chin (from the stored landmarks), so the field learns how they move with the expression (the paper: 0)."),
    mask_loss: float = typer.Option(0.0, "--mask-loss", min=0.0, help="Weight of a loss asking each ray's opacity to match the stored head mask (opaque head, empty space around it), so rendering can skip space and stop rays early [default: 0, the paper's loss alone]."),
    distortion_loss: float = typer.Option(0.0, "--distortion-loss", min=0.0, help="Weight of Mip-NeRF 360's distortion loss: each ray's weight gathered at one depth (hard surfaces), so rendering stops rays sooner [default: 0]."),
    lr: float = typer.Option(5e-4, "--lr", help="Initial learning rate (decays exponentially to --lr-final)."),
    lr_final: float = typer.Option(5e-5, "--lr-final", help="Final learning rate."),
    grid_lr_scale: float = typer.Option(20.0, "--grid-lr-scale", min=0.0, help="A fast field's hash grid learns at this multiple of the learning rate."),
    latent_dim: int = typer.Option(32, "--latent-dim", min=0, help="Size of the per-frame latent code (0: none; everything that changes over time must then come from the expression, which suits lipsync)."),
    rank: int = typer.Option(8, "--rank", min=1, help="Rank k of the multiplicative module (m) or of H."),
    smooth_after: int = typer.Option(-1, "--smooth-after", help="Step at which the self-attention smoothing starts (-1: half the steps, 0: never)."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every", min=1, help="Steps between checkpoints."),
    val_every: int = typer.Option(1000, "--val-every", min=1, help="Steps between validation renders (RUN/val/*.png)."),
    log_every: int = typer.Option(50, "--log-every", min=1, help="Steps between metrics.csv rows (and NaN checks)."),
    test_frames: int = typer.Option(-1, "--test-frames", help="Held-out frames per identity rendered for the final PSNR (-1: all)."),
    occupancy_grid: int = typer.Option(-1, "--occupancy-grid", help="Cells per axis of the occupancy grid that rendering uses to skip empty space (-1: 64 on CUDA, 32 on CPU; 0: none)."),
    grid_every: int = typer.Option(16, "--grid-every", min=1, help="Steps between occupancy-grid updates (the first after 256 steps)."),
    pack: bool = typer.Option(False, "--pack/--no-pack", help="After the occupancy grid's first update, run the networks only at samples in occupied cells (the rest count as empty space), and the fine network not behind what the coarse pass found opaque. Pays when the grid is sparse (e.g. with --mask-loss); on the real clips measured it kept 68-84% of the samples and was no faster [default: off, every sample runs, as the paper]."),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="On CUDA, replay each step's forward and backward pass as a CUDA graph (far less Python overhead per step)."),
    cache_frames: Optional[int] = typer.Option(None, "--cache-frames", help="Decoded frames kept in memory per clip; the rest are read from the stores as needed [default: all if the clips together fit in 4 GiB, or on a GPU in a quarter of its memory when that is more; else 64; 0: all]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU), bf16, tf32 or fp32."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN from its last checkpoint with its own settings."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run directory."),
) -> None:
    """Train one network for every store given (each store = one identity code).

    The last 10% of every clip is held out; the JSON summary reports the face-crop PSNR on
    it per identity. Checkpoints (tensors only, atomic) go to RUN/checkpoints; metrics to
    RUN/metrics.csv; validation renders to RUN/val; RUN/training_curve.png and
    RUN/identity_codes.png are drawn at the end. A killed run continues with --resume.

    Example: minerf train --ids stores/ -o runs/multi --field fast --steps 20000 | jq .mean_test_psnr
    """
    from minerf_cli.nerf.model import ModelConfig
    from minerf_cli.train import FIELD_DEFAULTS, FIELD_OPTIONS, train as train_run
    from minerf_cli.training import TrainConfig

    inputs = [*(ids or []), *(stores or [])]
    if resume:
        if inputs:
            raise UsageError("--resume takes the stores from the run; do not give --ids")
        emit_json(train_run([], output, ModelConfig(), TrainConfig(), device=device, resume=True, resume_steps=steps,
                            cache_frames=cache_frames))
        return
    if not inputs:
        raise UsageError("no stores given (use --ids STORE.h5... or --ids DIR)")
    if field not in FIELD_DEFAULTS:
        raise UsageError(f"--field {field!r}: expected one of {', '.join(FIELD_DEFAULTS)}")
    from minerf_cli.nerf.conditioning import NAMES

    if module.lower() not in NAMES:
        raise UsageError(f"--module {module!r}: expected one of {', '.join(NAMES)}")
    from minerf_cli.train import parse_field_options, parse_samples

    defaults = dict(FIELD_DEFAULTS[field])
    if samples:
        defaults["n_coarse"], defaults["n_fine"] = parse_samples(samples)
    model_cfg = ModelConfig(module=module.lower(), latent_dim=latent_dim, rank=rank, field=field,
                            field_options={**FIELD_OPTIONS[field], **parse_field_options(field, field_option or [])},
                            occupancy_resolution=occupancy_grid, **defaults)
    cfg = TrainConfig(steps=steps or 20000, rays=rays, frames_per_step=frames_per_step, mouth_fraction=mouth_rays, mask_weight=mask_loss, distortion_weight=distortion_loss, lr=lr, lr_final=lr_final,
                      grid_lr_scale=grid_lr_scale,
                      smooth_after=smooth_after, checkpoint_every=checkpoint_every, val_every=val_every,
                      log_every=log_every, test_frames=test_frames, precision=precision, seed=seed,
                      grid_every=grid_every, pack=pack, cuda_graphs=cuda_graphs)
    emit_json(train_run(inputs, output, model_cfg, cfg, device=device, force=force, cache_frames=cache_frames))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
