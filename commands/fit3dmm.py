"""`minerf fit3dmm STORE`: fit the ICT face model to a store's landmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def fit3dmm(
    store: Path = typer.Argument(..., help="A store written by `minerf prep` (gets a /tracking group)."),
    focal: Optional[float] = typer.Option(None, "--focal", min=1.0, help="Focal length in pixels of the stored crop; estimated when omitted."),
    iterations: int = typer.Option(2, "--iterations", min=1, max=50, help="Gauss-Newton iterations per frame on the whole clip."),
    smooth_pose: float = typer.Option(0.04, "--smooth-pose", min=0.0, help="Gaussian smoothing of head pose, sigma in seconds (0 = off)."),
    smooth_expression: float = typer.Option(0.04, "--smooth-expression", min=0.0, help="Smoothing of eye/brow/cheek blendshapes, sigma in seconds."),
    smooth_mouth: float = typer.Option(0.0, "--smooth-mouth", min=0.0, help="Smoothing of mouth/jaw blendshapes, sigma in seconds (default off: keeps speech motion)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing /tracking group."),
) -> None:
    """Fit the ICT face model to the landmarks: identity, camera, per-frame pose and blendshapes.

    Writes /tracking (intrinsics, camera_from_head, expression (N,53) in [0,1], identity (100,),
    fit_error in px) and prints a JSON summary with the mean reprojection error.

    Example: minerf fit3dmm talk.h5 | jq .mean_error_px
    """
    from minerf_cli.fit3dmm import fit_store
    from minerf_cli.tracking import FitConfig

    cfg = FitConfig(focal=focal, iterations=iterations, smooth_pose_s=smooth_pose,
                    smooth_expression_s=smooth_expression, smooth_mouth_s=smooth_mouth)
    emit_json(fit_store(store, cfg, force=force))


def register(app: typer.Typer) -> None:
    app.command("fit3dmm")(fit3dmm)
