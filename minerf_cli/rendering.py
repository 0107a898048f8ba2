"""Rendering frames with a trained model: per-frame codes, whole images, face-crop PSNR.

Used by training (validation, test PSNR), transfer and personalization. Shapes: N frames,
d expression dim, C condition dim, L latent dim, H x W image.
"""

from __future__ import annotations

import numpy as np
import torch

from . import metrics
from .clips import Clip
from .nerf import hashgrid_triton, march_triton
from .nerf.model import MINeRF
from .nerf.rays import head_rays, near_far_box
from .output import warn

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
    (H, W, 3) float in [0, 1] -> (H, W, 3) float, rendered as :func:`render_batch` renders
    (if given, only inside ``region`` [x0, y0, x1, y1); the rest is background)."""
    only = None
    if region is not None:
        x0, y0, x1, y1 = region
        only = torch.zeros(background.shape[:2], dtype=torch.bool, device=background.device)
        only[y0:y1, x0:x1] = True
    return render_batch(model, K, camera_from_head[None], cond[None], latent[None], background[None], chunk=chunk,
                        sampler=sampler, only=None if only is None else only[None])[0]


PREVIEW_STRIDE = 4  # the grid renderer's first pass looks at every 4th pixel in each direction
PREVIEW_MARGIN = 1.5  # cm: full-resolution rays start this far before their preview neighbours' first hit


def preview_pass(model: MINeRF, o: torch.Tensor, d: torch.Tensor, hit: torch.Tensor, cond: torch.Tensor,
                 latent: torch.Tensor, stride: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the full-resolution pass of the grid renderer has to look.

    Rays o, d (B, H, W, 3), hit (B, H, W) (they meet the rendered box), codes cond (B, C),
    latent (B, L) -> need (B, H, W) bool, min_t (B, H, W). The pixel at the centre of every
    ``stride`` x ``stride`` block is rendered first; its first hit is the t where its opacity
    passes 1% (``first_opacity`` of :func:`.nerf.marching.march_render`). A full-resolution pixel is
    rendered only if a preview ray in its block or the 8 blocks around it hit something,
    and its ray starts PREVIEW_MARGIN before the nearest of those hits: the space a
    preview found empty (opacity < 1%, in front of the surface or around the head) is
    skipped. Blocks are nearest-neighbour; a structure thinner than ``stride`` pixels that
    every preview ray misses is missed (the dilation by one block makes that rare)."""
    B, H, W, _ = o.shape
    c = stride // 2
    lo, ld, lh = o[:, c::stride, c::stride], d[:, c::stride, c::stride], hit[:, c::stride, c::stride]
    h, w = lo.shape[1:3]
    first = torch.full((B, h, w), float("inf"), device=o.device)
    sel = torch.nonzero(lh.reshape(-1))[:, 0]
    frame = sel // (h * w)
    hits = torch.empty(len(sel), device=o.device)
    model.render_pixels(lo.reshape(-1, 3)[sel], ld.reshape(-1, 3)[sel], cond[frame], latent[frame],
                        torch.zeros(len(sel), 3, device=o.device), chunk=chunk, sampler="grid", first_hit=hits)
    first.view(-1)[sel] = hits
    near = -torch.nn.functional.max_pool2d(-first[:, None], 3, stride=1, padding=1)[:, 0]  # (B, h, w) min over 3x3
    rows = (torch.arange(H, device=o.device) // stride).clamp(max=h - 1)
    cols = (torch.arange(W, device=o.device) // stride).clamp(max=w - 1)
    up = near[:, rows][:, :, cols]  # (B, H, W): each pixel takes its block's value
    need = hit & torch.isfinite(up)
    return need, up - PREVIEW_MARGIN


def render_batch(model: MINeRF, K: torch.Tensor, camera_from_head: torch.Tensor, cond: torch.Tensor,
                 latent: torch.Tensor, backgrounds: torch.Tensor, chunk: int = 16384, sampler: str = "auto",
                 preview: int | None = None, only: torch.Tensor | None = None) -> torch.Tensor:
    """Several images in one pass: K (3, 3), camera_from_head (B, 4, 4), cond (B, C), latent
    (B, L), backgrounds (B, H, W, 3) float in [0, 1] -> (B, H, W, 3) float. The pixels of
    all B frames whose rays hit the rendered box (:func:`box_hits`) are rendered together
    (per-ray codes), so the field sees large batches; the rest is background. With the
    occupancy grid and ``preview`` (default PREVIEW_STRIDE) > 1, a first pass on every
    ``preview``-th pixel (:func:`preview_pass`) narrows that down to the pixels near
    something opaque and starts their rays near the surface. ``only`` (B, H, W) bool:
    render at most these pixels. ``sampler``: ``MINeRF.uses_marching``."""
    B, H, W, _ = backgrounds.shape
    dev = backgrounds.device
    i, j = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    ij = torch.stack([i, j], -1)
    rays = [head_rays(K, camera_from_head[b], ij) for b in range(B)]
    o, d = torch.stack([r[0] for r in rays]), torch.stack([r[1] for r in rays])  # (B, H, W, 3)
    hit = box_hits(o, d, model.render_box(sampler))
    preview = PREVIEW_STRIDE if preview is None else preview
    result = backgrounds.reshape(-1, 3).float().clone()
    min_t = None
    if preview > 1 and model.uses_marching(sampler):
        hit, min_t = preview_pass(model, o, d, hit, cond, latent, preview, chunk)
    if only is not None:
        hit = hit & only
    p = torch.nonzero(hit.reshape(-1))[:, 0]
    f = p // (H * W)
    result[p] = model.render_pixels(o.reshape(-1, 3)[p], d.reshape(-1, 3)[p], cond[f], latent[f], result[p],
                                    chunk=chunk, sampler=sampler, min_t=None if min_t is None else min_t.reshape(-1)[p])
    report_kernel_fallback()
    return result.reshape(B, H, W, 3)


def report_kernel_fallback() -> None:
    """Once per process: say on stderr that the fused rendering kernels could not run here
    (:mod:`.nerf.march_triton`) and rendering went on in PyTorch (slower, same images)."""
    global _fallback_reported
    reason = march_triton.disabled_reason or hashgrid_triton.disabled_reason
    if reason and not _fallback_reported:
        _fallback_reported = True
        warn(f"the fused rendering kernels failed on this GPU ({reason}); "
             "rendering and training go on in PyTorch instead (slower, same images)")


_fallback_reported = False


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
