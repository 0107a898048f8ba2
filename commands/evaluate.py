"""`minerf evaluate GENERATED... --ref STORE`: image, identity and expression metrics."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from minerf_cli.output import command, emit_json


@command
def evaluate(
    generated: List[Path] = typer.Argument(..., help="Generated frames: a video, a directory of PNG frames, or a store's /frames; several are evaluated one by one."),
    ref: Path = typer.Option(..., "--ref", "-r", help="The reference: a store (its /landmarks place the face crop), a video or a frame directory."),
    ref_frames: Optional[str] = typer.Option(None, "--ref-frames", metavar="A:B", help="Reference frames A..B-1 that the generated frames show (default: the generated store's reference_frames attribute, else 0..n-1). With --identity-only: the frames whose identity is the reference (default: all)."),
    identity_only: bool = typer.Option(False, "--identity-only", help="No frame-wise ground truth (expression transfer, lip-sync): skip PSNR/SSIM/LPIPS; identity, CPBD and Exp-Diff only."),
    driving: Optional[Path] = typer.Option(None, "--driving", help="The driving store (with /tracking) for Exp-Diff: its blendshapes vs. those tracked on the generated frames."),
    driving_frames: Optional[str] = typer.Option(None, "--driving-frames", metavar="A:B", help="Driving frames the generated frames follow (default: the paired reference frames when --driving is the reference store, else 0..n-1)."),
    lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights", help="torchvision vgg16 ImageNet state dict (.pth) for LPIPS; LPIPS is skipped without it."),
    lpips_lin: Optional[Path] = typer.Option(None, "--lpips-lin", help="lpips' linear layers for VGG (its weights/v0.1/vgg.pth); goes with --lpips-weights."),
    device: str = typer.Option("auto", "--device", help="Where LPIPS, SyncNet and the audio model run: auto, cpu or cuda[:N] (the rest runs on the CPU)."),
    identity_frames: int = typer.Option(100, "--identity-frames", min=0, help="Face descriptors on at most this many evenly spaced generated frames (0 = all)."),
    crop_scale: float = typer.Option(1.2, "--crop-scale", min=1.0, max=3.0, help="Side of the square face crop, relative to the landmarks' extent."),
    audio: Optional[Path] = typer.Option(None, "--audio", metavar="SPEECH", help="The speech that drives the generated frames, for the audio-visual sync metrics (default: the generated store's /audio or the generated video's audio track)."),
    audio_model: Optional[Path] = typer.Option(None, "--audio-model", metavar="DIR", help="A trained minerf audio model: minerf's own sync offset and confidence (minerf_sync_offset_frames, minerf_sync_confidence) of the audio vs. the generated mouth."),
    syncnet: Optional[Path] = typer.Option(None, "--syncnet", metavar="WEIGHTS", help="syncnet_python's SyncNet weights (syncnet_v2.model) for LSE-D / LSE-C (25 fps video); skipped without it."),
    json_output: bool = typer.Option(False, "--json", hidden=True, help="Accepted for compatibility: the summary is always JSON."),
) -> None:
    """Score generated talking-face frames: PSNR, SSIM, LPIPS, CPBD, CSIM/ACD, Exp-Diff, lip sync.

    Image metrics use the face crop of the reference frame's landmarks.

    Identity: dlib's face descriptor of each generated frame against the mean
    descriptor of the reference frames: CSIM (cosine similarity), ACD (cosine
    distance, 1 - CSIM), face distance (Euclidean; dlib: < 0.6 = same person).

    Exp-Diff (with --driving): mean squared difference of the 53 blendshapes
    tracked on the generated frames and the driving store's.

    Lips: M-LMD (paired mode): mean distance of the 40 mediapipe lip points of
    generated and reference frames over the reference inter-ocular distance.
    With --audio-model: minerf's own audio/mouth sync offset and confidence.
    With --syncnet: LSE-D / LSE-C (SyncNet, from the weights you supply).

    Frames without a face are counted (frames_without_face). Prints one JSON
    object (several inputs: "inputs" and their "mean"); a table on stderr.

    Example: minerf evaluate test.mp4 --ref ana.h5 --ref-frames 900:1000 | jq .psnr

    Example: minerf evaluate ana_as_bob.mp4 --ref ana.h5 --identity-only --driving bob.h5
    """
    from minerf_cli.evaluate import EvalOptions, evaluate as run_evaluate  # heavy imports: only when run

    opts = EvalOptions(ref_frames=ref_frames, identity_only=identity_only, driving=driving,
                       driving_frames=driving_frames, lpips_weights=lpips_weights, lpips_lin=lpips_lin,
                       device=device, identity_frames=identity_frames, crop_scale=crop_scale, audio=audio,
                       audio_model=audio_model, syncnet=syncnet)
    emit_json(run_evaluate(generated, ref, opts))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
