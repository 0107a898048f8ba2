"""The ``transfer`` stage: render identity NAME with the expressions of a source clip.

For output frame k (source frame s_k):

* expression e = the source's tracked blendshapes at s_k, identity i = NAME's code;
* NAME's frame t_k supplies the background (its own torso, the plate under the head), the
  head pose (unless ``pose="source"``) and the latent code (the mean of NAME's training
  codes for a frame that was held out). NAME's frames are walked forwards and backwards
  (0, 1, ..., N-1, N-2, ..., 0, 1, ...) so a source longer than NAME's clip never jumps;
* when the source is NAME's own store, t_k = s_k: the output reconstructs those frames
  (by default the held-out last 10%), which ``minerf evaluate`` compares with the store.

Outputs: mp4 (H.264, with the source's audio for those frames), PNG frames, and/or a
minerf store of the rendered frames whose /frames carries ``reference_frames`` (the
source frame indices) for ``minerf evaluate``.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
import time
from pathlib import Path

import numpy as np
import torch

from . import runs, store
from .clips import Clip, load_clip
from .devices import autocast, resolve_device, resolve_precision
from .errors import MinerfError, UsageError
from .fsutil import atomic_output, check_output
from .output import log, progress_bar
from .rendering import frame_latents, render_batch, sequence_codes, to_uint8

POSES = ("target", "source")
# Latent codes of the rendered frames. "mean": the identity's mean training code for every
# frame (the per-frame codes also learn what the expression did not explain -- on a real
# clip the mouth: a lipsync rendered with the target frames' own codes followed those
# frames' mouths, re-tracked jawOpen r 0.52, and not the speech, r 0.03); "frame": each
# target frame's own code (held-out frames get the mean), closer to the original frames.
LATENTS = ("mean", "frame")
RENDER_BATCH_CUDA = 8  # frames rendered together on a GPU (one field call sees all their rays)


def pingpong(k: np.ndarray, n: int) -> np.ndarray:
    """Indices k (any >= 0) walked back and forth over 0..n-1: 0,1,..,n-1,n-2,..,1,0,1,..."""
    k = np.asarray(k, dtype=np.int64)
    if n <= 1:
        return np.zeros_like(k)
    period = 2 * (n - 1)
    r = k % period
    return np.where(r < n, r, period - r)


def parse_frames(spec: str | None, n: int) -> np.ndarray | None:
    """'A:B' (B exclusive, either side may be empty) -> indices; None when spec is None."""
    if spec is None:
        return None
    a, sep, b = spec.partition(":")
    try:
        start = int(a) if a.strip() else 0
        stop = int(b) if (sep and b.strip()) else (n if sep else start + 1)
    except ValueError:
        raise UsageError(f"--frames {spec!r}: expected A:B") from None
    if not (0 <= start < stop <= n):
        raise UsageError(f"--frames {spec!r}: outside the source's {n} frames")
    return np.arange(start, stop)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


def target_store(cfg: dict, video: int, override: Path | None) -> Path:
    entry = cfg["identities"][video]
    path = Path(override) if override else Path(entry["store"])
    if not path.is_file():
        raise MinerfError(f"{path}: the store of identity {entry['name']!r} is not there "
                          "(give --target-store with its new location)")
    return path


def plan_frames(source: Clip, target: Clip, same: bool, frames: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(source frames s_k, target frames t_k) of the output (module docstring)."""
    if same:
        s = target.test_idx if frames is None else frames
        if len(s) == 0:
            raise UsageError(f"{target.path}: no held-out frames to reconstruct (give --frames)")
        return s, s
    s = np.arange(source.n_frames) if frames is None else frames
    return s, pingpong(np.arange(len(s)), target.n_frames)


@dataclass
class Target:
    """A run's model opened for rendering identity ``name`` (its clip supplies backgrounds,
    poses and latent codes)."""

    model: object
    cfg: dict
    video: int
    clip: Clip
    smooth: bool
    device: torch.device
    precision: str


def open_target(run: Path, name: str, target_override: Path | None = None, device: str = "auto",
                precision: str = "auto", march_steps: int | None = None) -> Target:
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, cfg, ckpt = runs.load_model(run, dev)
    if march_steps is not None:
        model.set_march_steps(march_steps)
    video = runs.identity_index(cfg, name)
    clip = load_clip(target_store(cfg, video, target_override), dev, model.cfg.expr_dim)
    from .training import TrainConfig, smoothing_active

    smooth = smoothing_active(TrainConfig.from_dict(cfg["train"]), int(ckpt["step"]))
    return Target(model, cfg, video, clip, smooth, dev, prec)


def check_outputs(output: Path | None, png_dir: Path | None, store_out: Path | None, force: bool,
                  latent: str = "mean") -> None:
    """Refuse, before any work, outputs that are missing or in the way and an unknown ``latent``."""
    if latent not in LATENTS:
        raise UsageError(f"--latent {latent!r}: expected one of {', '.join(LATENTS)}")
    if output is None and png_dir is None and store_out is None:
        raise UsageError("nothing to write: give -o OUT.mp4, --png-dir DIR and/or --store OUT.h5")
    for path in (output, store_out):
        if path is not None:
            check_output(path, force)
    if png_dir is not None and png_dir.exists() and any(png_dir.iterdir()) and not force:
        raise UsageError(f"{png_dir}: directory is not empty (use --force)")


def render_sequence(t: Target, expressions: torch.Tensor, t_idx: np.ndarray, poses: torch.Tensor,
                    label: str, chunk: int = 32768, batch: int | None = None,
                    latent: str = "mean") -> tuple[list[np.ndarray], float]:
    """Render identity t.video with expressions (n, d) over the target frames t_idx (n,)
    (backgrounds, latent codes) at poses (n, 4, 4) -> (n uint8 frames, seconds spent
    rendering: the model's time, from the frames' backgrounds on the device to the uint8
    frames on the host). ``batch`` frames render together (default 8 on CUDA, 1 on CPU).
    ``latent``: see :data:`LATENTS` (checked by :func:`check_outputs`)."""
    model, dev = t.model, t.device
    with torch.no_grad():
        held_out = np.full(len(t_idx), t.clip.n_frames, dtype=np.int64)  # no own code: the mean
        latents = frame_latents(model, t.video, t_idx if latent == "frame" else held_out, t.clip.train_idx)
        cond, lat = sequence_codes(model, expressions.to(dev), t.video, latents, t.smooth)
    frames: list[np.ndarray] = []
    seconds = 0.0
    B = batch or (RENDER_BATCH_CUDA if dev.type == "cuda" else 1)
    with progress_bar(label, len(t_idx)) as bar:
        task = bar.add_task(label, total=len(t_idx), info="")
        for s in range(0, len(t_idx), B):
            ks = list(range(s, min(s + B, len(t_idx))))
            bgs = torch.stack([t.clip.background(int(t_idx[k])) for k in ks]).to(dev)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            with torch.no_grad(), autocast(dev, t.precision):
                imgs = render_batch(model, t.clip.K, poses[ks], cond[ks], lat[ks], bgs, chunk=chunk)
            frames.extend(to_uint8(imgs))
            seconds += time.perf_counter() - t1
            bar.update(task, advance=len(ks), info=f"{len(frames) / max(seconds, 1e-9):.1f} frames/s")
    log(f"rendered {len(frames)} frames at {len(frames) / max(seconds, 1e-9):.1f} frames/s")
    return frames, seconds


LOWER_FACE = ("jaw", "mouth", "cheekPuff")  # expression-name prefixes of the lower face


def drive_mouth(expr: torch.Tensor, mouth: np.ndarray, cols: list[int], speaker: Clip) -> torch.Tensor:
    """Expressions (n, d) with the lower face driven by speech: the predicted mouth/jaw
    blendshapes (n, m) into ``cols``; every other lower-face blendshape (LOWER_FACE: jaw
    sideways, lip roll, press, lower-lip down, ...) set to the speaker's mean over its
    training frames, because taken from the clip they carry the clip's own mouth motion (a
    lipsync whose mouthLowerDown etc. came from the original frames followed those frames,
    not the speech). The upper face is left as given."""
    from .facemodel import load_face_model

    names = list(load_face_model().expression_names)
    out = expr.clone()
    if len(names) == out.shape[1]:
        lower = [k for k, n in enumerate(names) if n.startswith(LOWER_FACE) and k not in cols]
        idx = torch.as_tensor(speaker.train_idx, device=speaker.expression.device)
        mean = speaker.expression[idx].mean(0).to(out.device, out.dtype)
        out[:, lower] = mean[lower]
    out[:, cols] = torch.as_tensor(mouth, dtype=out.dtype, device=out.device)
    return out


def audio_mouth(audio_model: Path, speech: Path, fps: float, n_frames: int | None, device: torch.device,
                cover: bool = False, speaker: Clip | None = None):
    """Mouth/jaw blendshapes predicted from a speech file -> (pcm 16 kHz, predictions (n, m),
    their indices into the expression vector). n = the speech's whole frames
    (floor(duration * fps)), or with ``cover`` every frame it touches (ceil), at most
    ``n_frames``. The model predicts the deviation from a speaker's mean mouth pose: with
    ``speaker`` that is the mean of its clip's tracked training frames (the rendered person's
    own resting mouth), else the model's training mean."""
    from .audio import check_audio, load_audio
    from .audio_model.bundle import AudioBundle
    from .output import warn

    bundle = AudioBundle.load(audio_model, device=str(device))
    loaded = load_audio(Path(speech))
    pcm = loaded.pcm
    for w in [*getattr(loaded, "warnings", []), *check_audio(pcm, 16000, fps, str(speech))]:
        warn(w)
    exact = len(pcm) / 16000 * fps
    n = max(1, math.ceil(exact - 1e-6)) if cover else int(math.floor(exact + 1e-6))
    if n_frames is not None:
        n = min(n, n_frames)
    windows = bundle.windows(pcm, fps, n)
    cols = list(bundle.mouth_indices)
    mean = None
    if speaker is not None:
        idx = torch.as_tensor(speaker.train_idx, device=speaker.expression.device)
        mean = speaker.expression[idx][:, cols].mean(0).cpu().numpy()
    return pcm, bundle.predict_expressions(windows, mean=mean), cols


def transfer(run: Path, name: str, source_path: Path, output: Path | None = None, png_dir: Path | None = None,
             store_out: Path | None = None, frames: str | None = None, pose: str = "target",
             side_by_side: bool = False, target_override: Path | None = None, device: str = "auto",
             precision: str = "auto", force: bool = False, chunk: int = 32768, crf: int = 18,
             jpeg_quality: int | None = None, speech: Path | None = None, audio_model: Path | None = None,
             latent: str = "mean", march_steps: int | None = None) -> dict:
    """Render NAME driven by ``source_path``; returns the JSON summary.

    Joint driving (JEAN): with ``speech`` and ``audio_model`` the mouth and jaw blendshapes
    come from the speech (frame k <-> speech time k / fps) and the rest from the source;
    the output is cut to the speech's length and carries the speech as its audio."""
    check_outputs(output, png_dir, store_out, force, latent)
    if pose not in POSES:
        raise UsageError(f"--pose {pose!r}: expected one of {', '.join(POSES)}")
    if (speech is None) != (audio_model is None):
        raise UsageError("joint driving needs both --audio SPEECH and --audio-model DIR")
    t0 = time.perf_counter()
    t = open_target(run, name, target_override, device, precision, march_steps)
    target, dev = t.clip, t.device
    same = _same_file(source_path, target.path)
    source = target if same else load_clip(source_path, dev, t.model.cfg.expr_dim)
    s_idx, t_idx = plan_frames(source, target, same, parse_frames(frames, source.n_frames))
    if source.size != target.size and side_by_side:
        raise UsageError(f"--side-by-side needs frames of one size ({source.size} vs {target.size})")
    expr = source.expression[torch.as_tensor(s_idx, device=dev)].clone()
    audio = None
    if speech is not None:
        pcm, mouth, cols = audio_mouth(audio_model, speech, source.fps, len(s_idx), dev, speaker=target)
        s_idx, t_idx = s_idx[: len(mouth)], t_idx[: len(mouth)]
        expr = drive_mouth(expr[: len(mouth)], mouth, cols, target)
        audio = pcm[: int(round(len(s_idx) * 16000 / source.fps))]
    elif bool(np.all(np.diff(s_idx) == 1)):
        audio = _audio_segment(source, s_idx)
    poses = (target.camera_from_head[torch.as_tensor(t_idx, device=dev)] if pose == "target"
             else source.camera_from_head[torch.as_tensor(s_idx, device=dev)])
    rendered, t_render = render_sequence(t, expr, t_idx, poses, "transfer", chunk, latent=latent)
    review = rendered
    if side_by_side:  # the mp4 and PNGs only; a --store always holds the rendered frames alone
        review = [np.concatenate([source.frame(int(s)).cpu().numpy(), r], 1) for s, r in zip(s_idx, rendered)]
    written = write_outputs(rendered, review, source.fps, audio, source.path, s_idx, t_idx, output, png_dir,
                            store_out, force, crf, jpeg_quality, requested=(expr, poses))
    mode = "reconstruction" if same else "transfer"
    return {"command": "transfer", "run": str(run), "id": name, "source": str(source_path),
            "mode": mode + ("+audio" if speech is not None else ""), "pose": pose, "frames": len(rendered),
            "source_frames": [int(s_idx[0]), int(s_idx[-1]) + 1], "fps": source.fps,
            "audio_driven": speech is not None,
            "render_fps": round(len(rendered) / max(t_render, 1e-9), 2), "total_s": round(time.perf_counter() - t0, 2),
            "device": str(dev), "precision": t.precision, "smoothing": t.smooth, **written}


def _audio_segment(source: Clip, s_idx: np.ndarray) -> np.ndarray | None:
    """The source's 16 kHz audio under frames s_idx (contiguous range assumed), or None."""
    if source.audio is None:
        return None
    rate = 16000
    a = int(round(s_idx[0] * rate / source.fps))
    b = int(round((s_idx[-1] + 1) * rate / source.fps))
    seg = source.audio[a:b]
    return np.pad(seg, (0, max(0, (b - a) - len(seg))))


def write_outputs(frames: list[np.ndarray], review: list[np.ndarray], fps: float, audio: np.ndarray | None,
                  reference: Path, s_idx: np.ndarray, t_idx: np.ndarray, output: Path | None, png_dir: Path | None,
                  store_out: Path | None, force: bool, crf: int, jpeg_quality: int | None = None,
                  requested: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Write the render store (``frames``) and the mp4 / PNGs (``review``: the frames, or
    source | result) with ``audio`` (16 kHz pcm or None); returns their paths. The store
    (whose /frames records ``reference_frames`` = s_idx of the ``reference`` store) goes
    first: it is what evaluation needs."""
    out: dict = {}
    if store_out is not None:
        H, W = frames[0].shape[:2]
        with store.create_store(store_out, "transfer", force) as f:
            with store.FrameWriter(f, H, W, jpeg_quality) as writer:
                for k, frame in enumerate(frames):
                    writer.put(k, frame)
            writer.trim(len(frames))
            ds = writer.dataset
            store.stamp(ds, "transfer")
            with store.open_store(reference) as src:
                for key in ("crop_box", "source_size", "source_fps", "start_time"):
                    if key in src["frames"].attrs:
                        ds.attrs[key] = src["frames"].attrs[key]
            ds.attrs["fps"] = fps
            ds.attrs["reference_frames"] = np.asarray(s_idx, np.int64)
            ds.attrs["target_frames"] = np.asarray(t_idx, np.int64)
            ds.attrs["reference_store"] = str(Path(reference).resolve())
            if requested is not None:
                g = f.create_group("render")
                store.stamp(g, "transfer")
                g.create_dataset("expression", data=requested[0].detach().float().cpu().numpy())
                g.create_dataset("camera_from_head", data=requested[1].detach().float().cpu().numpy())
                g.create_dataset("target_frames", data=np.asarray(t_idx, np.int64))
            if audio is not None:
                g = f.create_group("audio")
                store.stamp(g, "transfer")
                g.create_dataset("pcm", data=audio.astype(np.float32))
                g.attrs["sample_rate"] = 16000
        out["store"] = str(store_out)
    if output is not None:
        import soundfile as sf

        from .video import write_video

        with atomic_output(output, force) as tmp, tempfile.TemporaryDirectory() as td:
            wav = None
            if audio is not None:
                wav = Path(td) / "audio.wav"
                sf.write(wav, audio, 16000)
            write_video(tmp, review, fps, audio_path=wav, crf=crf)
        out["output"] = str(output)
        out["audio"] = audio is not None
    if png_dir is not None:
        import cv2

        png_dir.mkdir(parents=True, exist_ok=True)
        for k, frame in enumerate(review):
            if not cv2.imwrite(str(png_dir / f"{k:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
                raise MinerfError(f"{png_dir}: could not write PNG frames")
        out["png_dir"] = str(png_dir)
    return out
