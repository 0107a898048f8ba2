"""Camera rays in the canonical head space, near/far bounds and training-pixel sampling.

Conventions (minerf_cli.geometry, minerf_cli.raster):
* camera = OpenCV pinhole (x right, y down, z forward), intrinsics K in pixels of the crop;
* pixel (i, j) (row i, column j) has its centre at (u, v) = (j + 0.5, i + 0.5);
* ``camera_from_head`` (4, 4): x_cam = R x_head + t. MI-NeRF sec. 3.1: "the extracted head
  pose P = [R; t] is used to transform the sampled 3D points to the canonical space": we
  transform the rays with head_from_camera = camera_from_head^-1 (origin -R^T t, direction
  R^T d_cam), so every sample is already in head space (ICT cm, +y up, +z to the viewer).
Directions are unit vectors, so ray parameters t are distances in cm.
"""

from __future__ import annotations

import torch


def pixel_centers(ij: torch.Tensor) -> torch.Tensor:
    """(..., 2) [row i, column j] (int or float) -> (..., 2) [u, v] = [j + 0.5, i + 0.5]."""
    ij = ij.to(torch.get_default_dtype()) if not ij.is_floating_point() else ij
    return torch.stack([ij[..., 1] + 0.5, ij[..., 0] + 0.5], -1)


def camera_directions(K: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(3, 3) intrinsics, (..., 2) image points [u, v] -> (..., 3) camera-space directions
    K^-1 [u, v, 1] (z = 1, not normalised)."""
    fx, fy, cx, cy, s = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - s * y) / fx
    return torch.stack([x, y, torch.ones_like(x)], -1)


def head_rays(K: torch.Tensor, camera_from_head: torch.Tensor, ij: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixels ``ij (..., 2)`` [i, j] for one frame, in head space.

    K (3, 3), camera_from_head (4, 4) -> origins (..., 3), unit directions (..., 3).
    """
    K = K.to(torch.float32) if not K.is_floating_point() else K
    dtype = camera_from_head.dtype
    R, t = camera_from_head[:3, :3], camera_from_head[:3, 3]
    d_cam = camera_directions(K.to(dtype), pixel_centers(ij).to(dtype))
    d = d_cam @ R  # R^T d for row vectors
    d = d / d.norm(dim=-1, keepdim=True)
    o = -(R.T @ t)
    return o.expand_as(d), d


def image_rays(K: torch.Tensor, camera_from_head: torch.Tensor, height: int, width: int):
    """All H x W pixel rays of one frame: origins, directions (H, W, 3) in head space."""
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return head_rays(K, camera_from_head, torch.stack([i, j], -1))


def near_far_sphere(origins: torch.Tensor, dirs: torch.Tensor, center, radius: float,
                    min_near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersect rays (..., 3) (unit ``dirs``) with a sphere -> near (...), far (...), hit (...).

    near is clamped to >= min_near. Rays that miss get near = far = the parameter of the
    point closest to the centre (an empty interval: they render the background only).
    """
    c = torch.as_tensor(center, dtype=origins.dtype, device=origins.device)
    oc = origins - c
    b = (oc * dirs).sum(-1)  # t of the closest point is -b
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    hit = disc > 0
    root = torch.sqrt(disc.clamp_min(0))
    near = torch.where(hit, -b - root, -b).clamp_min(min_near)
    far = torch.where(hit, -b + root, -b).clamp_min(min_near)
    return near, torch.maximum(far, near), hit & (far > min_near)


def near_far_box(origins: torch.Tensor, dirs: torch.Tensor, box_min, box_max,
                 min_near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersect rays (..., 3) with an axis-aligned box (slab method) -> near, far, hit (...).

    Missed rays get near = far (empty interval) at max(t_entry, min_near)."""
    lo = torch.as_tensor(box_min, dtype=origins.dtype, device=origins.device)
    hi = torch.as_tensor(box_max, dtype=origins.dtype, device=origins.device)
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    t_in = torch.minimum(t0, t1).amax(-1)
    t_out = torch.maximum(t0, t1).amin(-1)
    near = t_in.clamp_min(min_near)
    hit = t_out > near
    far = torch.where(hit, t_out, near)
    return near, far, hit


def project_box(K: torch.Tensor, camera_from_head: torch.Tensor, box_min, box_max) -> torch.Tensor:
    """Image bounding rectangle [u0, v0, u1, v1] (pixels) of a head-space box's 8 corners seen
    from camera_from_head (4, 4) -> (4,), or (N, 4, 4) -> (N, 4) (all corners in front of
    the camera assumed; depths are clamped at 1e-6)."""
    lo = torch.as_tensor(box_min, dtype=camera_from_head.dtype, device=camera_from_head.device)
    hi = torch.as_tensor(box_max, dtype=camera_from_head.dtype, device=camera_from_head.device)
    corners = torch.stack(torch.meshgrid(*[torch.stack([lo[k], hi[k]]) for k in range(3)], indexing="ij"), -1).reshape(8, 3)
    R, t = camera_from_head[..., :3, :3], camera_from_head[..., None, :3, 3]
    cam = corners @ R.transpose(-1, -2) + t  # (..., 8, 3)
    uvw = cam @ K.to(cam.dtype).T
    uv = uvw[..., :2] / uvw[..., 2:].clamp_min(1e-6)
    return torch.cat([uv.amin(-2), uv.amax(-2)], -1)


def box_mask(height: int, width: int, rect) -> torch.Tensor:
    """(H, W) bool: pixels whose centre (j + 0.5, i + 0.5) lies in rect [u0, v0, u1, v1]."""
    u0, v0, u1, v1 = [float(r) for r in rect]
    v = torch.arange(height, dtype=torch.float32) + 0.5
    u = torch.arange(width, dtype=torch.float32) + 0.5
    return ((v >= v0) & (v <= v1))[:, None] & ((u >= u0) & (u <= u1))[None, :]


def _choose(candidates: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    if n <= len(candidates):  # without replacement
        return candidates[torch.randperm(len(candidates), generator=generator)[:n]]
    return candidates[torch.randint(len(candidates), (n,), generator=generator)]


def sample_pixels(mask: torch.Tensor, n: int, inside_fraction: float = 0.95,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose ``n`` training pixels of one frame -> (n, 2) long [i, j].

    MI-NeRF app. E: "We sample rays such that 95% of them correspond to pixels inside the
    detected bounding box of the head". round(n * inside_fraction) pixels come from
    ``mask`` (H, W) bool (e.g. :func:`box_mask`), the rest from outside it, each set drawn
    uniformly without replacement (with replacement when it is smaller than asked). If
    one side is empty, all pixels come from the other.
    """
    flat = mask.reshape(-1).bool()
    inside = torch.nonzero(flat, as_tuple=False)[:, 0]
    outside = torch.nonzero(~flat, as_tuple=False)[:, 0]
    n_in = int(round(n * inside_fraction))
    if len(outside) == 0:
        n_in = n
    elif len(inside) == 0:
        n_in = 0
    parts = []
    if n_in:
        parts.append(_choose(inside, n_in, generator))
    if n - n_in:
        parts.append(_choose(outside, n - n_in, generator))
    idx = torch.cat(parts)
    W = mask.shape[-1]
    return torch.stack([idx // W, idx % W], -1)


def sample_box_pixels(n: int, box: torch.Tensor, height: int, width: int, inside_fraction: float = 0.95,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` training pixels of one frame without a host-device sync -> (n, 2) long [i, j].

    box (4,) [u0, v0, u1, v1] pixel edges (e.g. the bounding box of the head mask) on any
    device: round(n * inside_fraction) pixels are drawn uniformly inside it (with
    replacement), the rest uniformly from the whole frame (MI-NeRF app. E: 95% of the rays
    inside the detected head box).
    """
    dev = box.device
    n_in = int(round(n * inside_fraction))
    u = torch.rand((n, 2), generator=generator, device=generator.device if generator is not None else dev).to(dev)
    lo = torch.stack([box[1], box[0]]).float()  # [v0, u0]
    hi = torch.stack([box[3], box[2]]).float()
    full = torch.tensor([height, width], dtype=torch.float32).to(dev, non_blocking=True)  # no sync
    span = torch.cat([(hi - lo).expand(n_in, 2), full.expand(n - n_in, 2)])
    start = torch.cat([lo.expand(n_in, 2), torch.zeros(n - n_in, 2, device=dev)])
    ij = (start + u * span).long()
    return torch.minimum(ij, (full - 1).long())
