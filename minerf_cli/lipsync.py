"""The ``lipsync`` stage: identity NAME speaking new speech (dubbing).

Mouth and jaw blendshapes are predicted from the speech by the audio model
(`minerf encode-audio --fit`), around NAME's own mean mouth pose; NAME's other blendshapes, head pose, background and latent
codes come from NAME's own clip, walked forwards and backwards (no jump) for as long as
the speech lasts. The mp4 carries the speech; it has ceil(duration * fps) frames, the
speech padded with silence to exactly that length, so audio and video are in sync and of
equal length (to within the padding, under one frame).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .transfer import audio_mouth, check_outputs, drive_mouth, open_target, pingpong, render_sequence, write_outputs


def lipsync(run: Path, name: str, speech: Path, audio_model: Path, output: Path | None = None,
            png_dir: Path | None = None, store_out: Path | None = None, target_override: Path | None = None,
            device: str = "auto", precision: str = "auto", force: bool = False, crf: int = 18,
            jpeg_quality: int | None = None, max_frames: int | None = None, latent: str = "mean",
            march_steps: int | None = None) -> dict:
    """Render NAME lip-synced to ``speech``; returns the JSON summary."""
    check_outputs(output, png_dir, store_out, force, latent)
    t0 = time.perf_counter()
    t = open_target(run, name, target_override, device, precision, march_steps)
    clip, dev = t.clip, t.device
    pcm, mouth, cols = audio_mouth(audio_model, speech, clip.fps, max_frames, dev, cover=True, speaker=clip)
    n = len(mouth)
    duration = len(pcm) / 16000
    t_idx = pingpong(np.arange(n), clip.n_frames)
    idx = torch.as_tensor(t_idx, device=dev)
    expr = drive_mouth(clip.expression[idx], mouth, cols, clip)
    poses = clip.camera_from_head[idx]
    frames, seconds = render_sequence(t, expr, t_idx, poses, "lipsync", latent=latent)
    n_samples = int(round(n * 16000 / clip.fps))
    audio = np.pad(pcm[:n_samples], (0, max(0, n_samples - len(pcm))))
    written = write_outputs(frames, frames, clip.fps, audio, clip.path, t_idx, t_idx, output, png_dir, store_out,
                            force, crf, jpeg_quality, requested=(expr, poses))
    return {"command": "lipsync", "run": str(run), "id": name, "speech": str(speech), "frames": n,
            "fps": clip.fps, "speech_s": round(duration, 3), "video_s": round(n / clip.fps, 3),
            "mouth_blendshapes": len(cols), "render_fps": round(n / max(seconds, 1e-9), 2),
            "total_s": round(time.perf_counter() - t0, 2), "device": str(dev), "precision": t.precision,
            **written}
