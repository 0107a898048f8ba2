"""Options that `transfer` and `lipsync` share (both render a trained identity to files)."""

from __future__ import annotations

import typer

PNG_DIR = typer.Option(None, "--png-dir", help="Also write the frames as PNGs into this directory.")
TARGET_STORE = typer.Option(None, "--target-store", help="NAME's store, if it moved since training.")
LATENT = typer.Option("mean", "--latent", help="Latent codes: mean (the identity's mean code: the mouth follows the driving expressions) or frame (each target frame's own code: closer to the original frames, whose mouth can show through).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda[:N].")
PRECISION = typer.Option("auto", "--precision", help="auto (bf16 on CUDA), bf16, tf32 or fp32.")
JPEG_QUALITY = typer.Option(None, "--jpeg-quality", min=1, max=100, help="Store --store frames as JPEG of this quality [default: lossless].")
CRF = typer.Option(18, "--crf", min=0, max=51, help="H.264 quality (lower is better).")
MARCH_STEPS = typer.Option(None, "--march-steps", min=8, help="Ray-marching steps across the head box (default: the run's own, 192 for runs made since 2026-11-22). Fewer render faster and coarser: 128 ran 1.3x faster than 192 for 0.05 dB less held-out PSNR.")
FORCE = typer.Option(False, "--force", help="Overwrite existing outputs.")
