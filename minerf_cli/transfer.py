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

import tempfile
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
from .rendering import frame_latents, render_frame, sequence_codes, to_uint8

POSES = ("target", "source")


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


def transfer(run: Path, name: str, source_path: Path, output: Path | None = None, png_dir: Path | None = None,
             store_out: Path | None = None, frames: str | None = None, pose: str = "target",
             side_by_side: bool = False, target_override: Path | None = None, device: str = "auto",
             precision: str = "auto", force: bool = False, chunk: int = 32768, crf: int = 18,
             jpeg_quality: int | None = None, _expressions: np.ndarray | None = None) -> dict:
    """Render NAME driven by ``source_path``; returns the JSON summary.

    ``_expressions`` (n, d) replaces the source's blendshapes for the chosen frames (used by
    lip-sync / joint driving)."""
    if output is None and png_dir is None and store_out is None:
        raise UsageError("nothing to write: give -o OUT.mp4, --png-dir DIR and/or --store OUT.h5")
    if pose not in POSES:
        raise UsageError(f"--pose {pose!r}: expected one of {', '.join(POSES)}")
    for path in (output, store_out):
        if path is not None:
            check_output(path, force)
    if png_dir is not None and png_dir.exists() and any(png_dir.iterdir()) and not force:
        raise UsageError(f"{png_dir}: directory is not empty (use --force)")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    t0 = time.perf_counter()
    model, cfg, ckpt = runs.load_model(run, dev)
    video = runs.identity_index(cfg, name)
    tpath = target_store(cfg, video, target_override)
    target = load_clip(tpath, dev, model.cfg.expr_dim)
    same = _same_file(source_path, tpath)
    source = target if same else load_clip(source_path, dev, model.cfg.expr_dim)
    s_idx, t_idx = plan_frames(source, target, same, parse_frames(frames, source.n_frames))
    if source.size != target.size and side_by_side:
        raise UsageError(f"--side-by-side needs frames of one size ({source.size} vs {target.size})")
    from .training import TrainConfig, smoothing_active

    smooth = smoothing_active(TrainConfig.from_dict(cfg["train"]), int(ckpt["step"]))
    with torch.no_grad():
        expr = source.expression[torch.as_tensor(s_idx, device=dev)]
        if _expressions is not None:
            expr = torch.as_tensor(_expressions, dtype=torch.float32, device=dev)
        latents = frame_latents(model, video, t_idx, target.train_idx)
        cond, lat = sequence_codes(model, expr, video, latents, smooth)
    poses = (target.camera_from_head[torch.as_tensor(t_idx, device=dev)] if pose == "target"
             else source.camera_from_head[torch.as_tensor(s_idx, device=dev)])
    rendered: list[np.ndarray] = []
    t_render = 0.0
    with progress_bar("transfer", len(s_idx)) as bar:
        task = bar.add_task("transfer", total=len(s_idx), info=name)
        for k in range(len(s_idx)):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            with torch.no_grad(), autocast(dev, prec):
                img = render_frame(model, target.K, poses[k], cond[k], lat[k],
                                   target.background(int(t_idx[k])).to(dev), chunk=chunk)
            rendered.append(to_uint8(img))
            t_render += time.perf_counter() - t1
            bar.update(task, advance=1, info=f"{name} {(k + 1) / max(t_render, 1e-9):.1f} frames/s")
    review = rendered
    if side_by_side:  # the mp4 and PNGs only; a --store always holds the rendered frames alone
        review = [np.concatenate([source.frames[int(s)].cpu().numpy(), r], 1) for s, r in zip(s_idx, rendered)]
    written = write_outputs(rendered, review, source, s_idx, t_idx, output, png_dir, store_out, force, crf, jpeg_quality)
    total = time.perf_counter() - t0
    log(f"rendered {len(rendered)} frames of {name} at {len(rendered) / max(t_render, 1e-9):.1f} frames/s")
    return {"command": "transfer", "run": str(run), "id": name, "source": str(source_path),
            "mode": "reconstruction" if same else "transfer", "pose": pose, "frames": len(rendered),
            "source_frames": [int(s_idx[0]), int(s_idx[-1]) + 1], "fps": source.fps,
            "render_fps": round(len(rendered) / max(t_render, 1e-9), 2), "total_s": round(total, 2),
            "device": str(dev), "precision": prec, "smoothing": smooth, **written}


def _audio_segment(source: Clip, s_idx: np.ndarray) -> np.ndarray | None:
    """The source's 16 kHz audio under frames s_idx (contiguous range assumed), or None."""
    if source.audio is None:
        return None
    rate = 16000
    a = int(round(s_idx[0] * rate / source.fps))
    b = int(round((s_idx[-1] + 1) * rate / source.fps))
    seg = source.audio[a:b]
    return np.pad(seg, (0, max(0, (b - a) - len(seg))))


def write_outputs(frames: list[np.ndarray], review: list[np.ndarray], source: Clip, s_idx: np.ndarray,
                  t_idx: np.ndarray, output: Path | None, png_dir: Path | None, store_out: Path | None,
                  force: bool, crf: int, jpeg_quality: int | None = None) -> dict:
    """Write the render store (``frames``) and the mp4 / PNGs (``review``: the frames, or
    source | result); returns their paths. The store goes first: it is what evaluation needs."""
    out: dict = {}
    contiguous = bool(np.all(np.diff(s_idx) == 1))
    audio = _audio_segment(source, s_idx) if contiguous else None
    if store_out is not None:
        H, W = frames[0].shape[:2]
        with store.create_store(store_out, "transfer", force) as f:
            with store.FrameWriter(f, H, W, jpeg_quality) as writer:
                for k, frame in enumerate(frames):
                    writer.put(k, frame)
            writer.trim(len(frames))
            ds = writer.dataset
            store.stamp(ds, "transfer")
            with store.open_store(source.path) as src:
                for key in ("crop_box", "source_size", "source_fps", "start_time"):
                    if key in src["frames"].attrs:
                        ds.attrs[key] = src["frames"].attrs[key]
            ds.attrs["fps"] = source.fps
            ds.attrs["reference_frames"] = np.asarray(s_idx, np.int64)
            ds.attrs["target_frames"] = np.asarray(t_idx, np.int64)
            ds.attrs["reference_store"] = str(source.path.resolve())
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
            write_video(tmp, review, source.fps, audio_path=wav, crf=crf)
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
