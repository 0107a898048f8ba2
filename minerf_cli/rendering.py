"""Rendering frames with a trained model: per-frame codes, whole images, face-crop PSNR.

Used by training (validation, test PSNR), transfer and personalization. Shapes: N frames,
d expression dim, C condition dim, L latent dim, H x W image.
"""

from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .clips import Clip
from .nerf.model import MINeRF
from .nerf.rays import head_rays, near_far_box

FACE_SCALE = 1.2  # face crop = landmark box grown by this factor (evaluation)


def frame_latents(model: MINeRF, video: int, frames: np.ndarray, train_idx: np.ndarray) -> torch.Tensor:
    """Latent codes (n, L) for frames of a training video: their own code when the frame
    was trained on, else the mean code of the video's training frames (held-out frames have
    no learned code)."""
    dev = model.latent.table.weight.device
    frames = np.asarray(frames, dtype=np.int64)
    n_video = int(model.latent.lengths[video])
    trained = np.isin(frames, train_idx) & (frames < n_video)
    train_idx = train_idx[train_idx < n_video]
    mean = model.latent(torch.full((len(train_idx),), video, device=dev),
                        torch.as_tensor(train_idx, device=dev)).mean(0)
    out = mean.expand(len(frames), -1).clone()
    if trained.any():
        sel = torch.as_tensor(np.nonzero(trained)[0], device=dev)
        out[sel] = model.latent(torch.full((len(sel),), video, device=dev),
                                torch.as_tensor(frames[trained], device=dev))
    return out


def sequence_codes(model: MINeRF, expressions: torch.Tensor, video: int, latents: torch.Tensor,
                   smooth: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditions for a sequence of frames: expressions (N, d), identity ``video``,
    latents (N, L) -> cond (N, C), latent (N, L); with ``smooth`` the self-attention
    smoothing runs over each frame's window of neighbours in the sequence."""
    vid = torch.full((len(expressions),), video, dtype=torch.long, device=expressions.device)
    cond = model.condition(expressions, vid)
    if not smooth or model.smoothing is None:
        return cond, latents
    from .nerf.smoothing import neighbour_window

    win = neighbour_window(torch.arange(len(expressions), device=expressions.device), len(expressions),
                           model.cfg.smoothing_window)  # (N, T)
    return model.smooth(cond[win], latents[win])


def face_box(points: np.ndarray, height: int, width: int, scale: float = FACE_SCALE) -> tuple[int, int, int, int] | None:
    """The evaluation's square face crop [x0, y0, x1, y1) (:func:`metrics.face_box`) of
    (P, >=2) landmark pixels, or None when there are no finite landmarks."""
    if not np.isfinite(points[:, :2]).all(1).any():
        return None
    return tuple(int(v) for v in metrics.face_box(points, (height, width), scale))


def box_hits(origins: torch.Tensor, dirs: torch.Tensor, box: tuple | None) -> torch.Tensor:
    """Rays (..., 3) -> (...) bool: the ray meets ``box`` ((min, max) head space, the box
    rendering looks at: ``MINeRF.render_box``; None: no ray). Only these pixels are
    rendered, the others get the background."""
    if box is None:
        return torch.zeros(origins.shape[:-1], dtype=torch.bool, device=origins.device)
    return near_far_box(origins, dirs, *box)[2]


def render_frame(model: MINeRF, K: torch.Tensor, camera_from_head: torch.Tensor, cond: torch.Tensor,
                 latent: torch.Tensor, background: torch.Tensor, region: tuple[int, int, int, int] | None = None,
                 chunk: int = 16384, sampler: str = "auto") -> torch.Tensor:
    """One image: K (3, 3), camera_from_head (4, 4), cond (C,), latent (L,), background
    (H, W, 3) float in [0, 1] -> (H, W, 3) float. Only pixels whose ray hits the rendered
    box (:func:`box_hits`; and, if given, inside ``region`` [x0, y0, x1, y1)) are rendered;
    the rest is background."""
    H, W, _ = background.shape
    dev = background.device
    i, j = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    o, d = head_rays(K, camera_from_head, torch.stack([i, j], -1))
    hit = box_hits(o, d, model.render_box(sampler))
    if region is not None:
        x0, y0, x1, y1 = region
        inside = torch.zeros_like(hit)
        inside[y0:y1, x0:x1] = True
        hit = hit & inside
    return model.render_image(o, d, cond, latent, background, chunk=chunk, only=hit, sampler=sampler)


def render_batch(model: MINeRF, K: torch.Tensor, camera_from_head: torch.Tensor, cond: torch.Tensor,
                 latent: torch.Tensor, backgrounds: torch.Tensor, chunk: int = 16384, sampler: str = "auto") -> torch.Tensor:
    """Several images in one pass: K (3, 3), camera_from_head (B, 4, 4), cond (B, C), latent
    (B, L), backgrounds (B, H, W, 3) float in [0, 1] -> (B, H, W, 3) float. The pixels of
    all B frames whose rays hit the rendered box (:func:`box_hits`) are rendered together (per-ray codes), so the
    field sees large batches; the rest is background. ``sampler``: ``MINeRF.uses_marching``."""
    B, H, W, _ = backgrounds.shape
    dev = backgrounds.device
    i, j = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    ij = torch.stack([i, j], -1)
    os_, ds, frame_of, pix = [], [], [], []
    box = model.render_box(sampler)
    for b in range(B):
        o, d = head_rays(K, camera_from_head[b], ij)
        hit = box_hits(o, d, box)
        sel = torch.nonzero(hit.reshape(-1))[:, 0]
        os_.append(o.reshape(-1, 3)[sel])
        ds.append(d.reshape(-1, 3)[sel])
        frame_of.append(torch.full_like(sel, b))
        pix.append(sel + b * H * W)
    o, d, f, p = (torch.cat(x) for x in (os_, ds, frame_of, pix))
    result = backgrounds.reshape(-1, 3).float().clone()
    result[p] = model.render_pixels(o, d, cond[f], latent[f], result[p], chunk=chunk, sampler=sampler)
    return result.reshape(B, H, W, 3)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(..., H, W, 3) float in [0, 1] -> uint8 numpy."""
    return (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def render_clip_frames(model: MINeRF, video: int, clip: Clip, frames: np.ndarray, smooth: bool,
                       crop_only: bool = False, chunk: int = 16384, sampler: str = "auto"):
    """Yield (frame index, rendered uint8 (H, W, 3), face box or None) for frames of a
    training video (its own expressions, pose, background; held-out frames use the mean
    latent code). With ``crop_only`` just the face crop is rendered (for PSNR)."""
    frames = np.asarray(frames, dtype=np.int64)
    if len(frames) == 0:
        return
    H, W = clip.size
    dev = clip.device
    latents = frame_latents(model, video, np.arange(clip.n_frames), clip.train_idx)
    cond_all, lat_all = sequence_codes(model, clip.expression.to(latents.device), video, latents, smooth)
    for n in frames:
        box = face_box(clip.landmarks[n], H, W)
        region = box if crop_only else None
        img = render_frame(model, clip.K, clip.camera_from_head[n], cond_all[n], lat_all[n],
                           clip.background(int(n)).to(dev), region=region, chunk=chunk, sampler=sampler)
        yield int(n), to_uint8(img), box


def face_psnr(model: MINeRF, video: int, clip: Clip, frames: np.ndarray, smooth: bool,
              sampler: str = "auto") -> float | None:
    """Mean face-crop PSNR (dB) over ``frames`` of a training video (None if no frame)."""
    values = []
    for n, img, box in render_clip_frames(model, video, clip, frames, smooth, crop_only=True, sampler=sampler):
        if box is None:
            continue
        x0, y0, x1, y1 = box
        ref = clip.frame(n)[y0:y1, x0:x1].cpu().numpy()
        values.append(metrics.psnr(img[y0:y1, x0:x1], ref))
    return float(np.mean(values)) if values else None
