"""Ray marching through an occupancy grid: empty-space skipping and early ray termination.

Used to render with a trained model (``MINeRF.render_rays_marched``). Along each ray the
candidate samples are uniform steps t_k = near + (k + 1/2) step, k = 0..n_steps-1, inside
[near, far); only those in occupied cells of the grid are evaluated (packed: the field
sees a flat list of points), in rounds of ``per_round`` occupied samples per ray, front to
back; after each round rays whose transmittance fell below ``min_transmittance`` (1%: what is
left goes to the background, an error of at most 1% of a colour difference; 0.1% gave the
same held-out PSNR to 0.001 dB and 12% more samples) stop, and
only the rays still going are looked at in the next round (:func:`compact_samples` packs
each ray's occupied samples to the left of an (R, M) table, so a round reads just its
columns of the live rays).

Compositing is the quadrature of :mod:`.render` with delta = step for every sample (the
width of the sample's own interval, as in Instant-NGP): alpha = 1 - exp(-sigma step),
w_k = T_k alpha_k; the background rule is kept: what transmittance is left after the last
evaluated sample goes to the background colour (C = sum w_k c_k + T_last bg). Skipped
samples have alpha 0 and leave T unchanged, so a grid that marks every cell occupied gives
exactly the uniform-step quadrature over all n_steps samples.

Shapes: R rays, P packed samples, K = per_round, C condition dim, L latent dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import hashgrid_triton, march_triton
from .occupancy import OccupancyGrid


@dataclass
class MarchStats:
    candidates: int  # uniform-step samples inside the box
    occupied: int  # of them in occupied cells
    evaluated: int  # field evaluations (occupied samples before termination)
    rounds: int


def occupied_samples(origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                     grid: OccupancyGrid, step: float, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Occupied candidate samples of rays (R, 3) over [near, far) (R,) ->
    ray (P,) int64, t (P,), rank (P,) int64 (0 for a ray's first occupied sample, sorted by
    ray then t), candidates (R,) int64 (samples inside [near, far) per ray)."""
    k = torch.arange(n_steps, device=origins.device, dtype=origins.dtype)
    t = near[:, None] + (k + 0.5) * step  # (R, n)
    valid = t < far[:, None]
    occ = valid & grid.is_occupied(origins[:, None, :] + dirs[:, None, :] * t[..., None])
    rank = torch.cumsum(occ, 1) - 1
    ray, col = torch.nonzero(occ, as_tuple=True)
    return ray, t[ray, col], rank[ray, col], valid.sum(1)


def compact_samples(origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                    grid: OccupancyGrid, step: float, n_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The occupied candidate samples of each ray, front to back, packed to the left:
    rays (R, 3), near, far (R,) -> t (R, M) (inf past a ray's last occupied sample, M the
    largest count), count (R,) int64 occupied samples per ray, candidates (R,) int64."""
    ray, t, rank, cand = occupied_samples(origins, dirs, near, far, grid, step, n_steps)
    count = torch.bincount(ray, minlength=origins.shape[0])
    M = int(count.max()) if count.numel() else 0
    packed = torch.full((origins.shape[0], max(M, 1)), float("inf"), device=origins.device, dtype=t.dtype)
    packed[ray, rank] = t
    return packed[:, :M], count, cand


def per_point(code: torch.Tensor, ray: torch.Tensor) -> torch.Tensor:
    """Shared (D,) code -> unchanged; per-ray (R, D) codes -> their rows for points (P, D)."""
    return code if code.dim() == 1 else code[ray]


def _round_pytorch(field, origins, dirs, cond, latent, packed, active, start, per_round, step, T, color,
                   first_hit, first_opacity) -> int:
    """One round of :func:`march_render` in PyTorch, in place on T (R,), color (R, 3),
    first_hit (R,) -> number of samples evaluated."""
    tt = packed[active, start:start + per_round]  # (A, K)
    pr, pc = torch.nonzero(torch.isfinite(tt), as_tuple=True)
    r = active[pr]
    x = origins[r] + dirs[r] * tt[pr, pc, None]
    density, rgb = field(x[:, None, :], dirs[r], per_point(cond, r), per_point(latent, r))
    alpha = torch.zeros_like(tt)
    alpha[pr, pc] = -torch.expm1(-density[:, 0].float() * step)
    colors = torch.zeros(*tt.shape, 3, device=tt.device)
    colors[pr, pc] = rgb[:, 0].float()
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha], 1), 1)  # (A, K + 1)
    Ta = T[active]
    color[active] += ((Ta[:, None] * trans[:, :-1] * alpha)[..., None] * colors).sum(1)
    if first_hit is not None:  # rays crossing first_opacity in this round: their first such sample
        crossed = (1.0 - Ta[:, None] * trans[:, 1:] > first_opacity) & (Ta[:, None] >= 1.0 - first_opacity)
        found = crossed.any(1)
        col = crossed.int().argmax(1)
        first_hit[active[found]] = tt[found, col[found]]
    T[active] = Ta * trans[:, -1]
    return int(pr.numel())


def _round_fused(kernel, origins, dirs, codes, dir_codes, packed, count, active, start, per_round, step, T, color,
                 first_hit, first_opacity) -> int:
    """One round of :func:`march_render` through :mod:`.march_triton`'s kernels, in place
    on T, color, first_hit -> number of samples evaluated. Live ray j's samples of the
    round are the flat list's [off_j, off_j + n_j)."""
    dev = packed.device
    n = (count[active] - start).clamp(max=per_round)
    end = torch.cumsum(n, 0)
    P = int(end[-1])
    off = end - n
    j = torch.repeat_interleave(torch.arange(len(active), device=dev), n, output_size=P)
    r = active[j]
    t = packed[r, start + torch.arange(P, device=dev) - off[j]]
    density, rgb = kernel(r, t, origins, dirs, codes, dir_codes)
    march_triton.composite(active, off, n, density, rgb, t, T, color, first_hit, step, first_opacity, per_round)
    return P


@torch.no_grad()
def march_render(field, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
                 far: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor, background: torch.Tensor,
                 step: float, n_steps: int, per_round: int = 16, min_transmittance: float = 1e-2,
                 first_hit: torch.Tensor | None = None,
                 first_opacity: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, MarchStats]:
    """Render rays (module docstring).

    field(x (P, 1, 3), viewdir (P, 3), cond (P, C) or (C,), latent (P, L) or (L,)) ->
    density (P, 1), rgb (P, 1, 3); origins, dirs (R, 3) unit; near, far (R,) (far <= near:
    the ray misses); cond (R, C) or (C,); latent (R, L) or (L,); background (R, 3) ->
    rgb (R, 3) float32, opacity (R,) (1 - T_last), :class:`MarchStats`.
    ``first_hit`` (R,) float, if given, is filled with the t of each ray's first sample after
    which its opacity exceeds ``first_opacity`` (inf where it never does).
    A fast field on CUDA goes through the fused kernels of :mod:`.march_triton` (same
    result up to float16 rounding in its MLP layers).
    """
    fused = march_triton.supports(field, origins.device)
    args = (field, grid, origins, dirs, near, far, cond, latent, background, step, n_steps, per_round,
            min_transmittance, first_hit, first_opacity)
    if not fused:
        return _march(False, *args)
    with hashgrid_triton.on_device(origins):  # the first fused march compiles the kernels: PyTorch if that fails
        out = hashgrid_triton.first_use(march_triton, lambda: _march(True, *args), march_triton.disable)
        return out if out is not None else _march(False, *args)


def _march(fused: bool, field, grid, origins, dirs, near, far, cond, latent, background, step, n_steps, per_round,
           min_transmittance, first_hit, first_opacity) -> tuple[torch.Tensor, torch.Tensor, MarchStats]:
    """:func:`march_render` with (``fused``) or without the kernels of :mod:`.march_triton`."""
    R = origins.shape[0]
    dev = origins.device
    if first_hit is not None:
        first_hit.fill_(float("inf"))
    if fused:
        origins, dirs = origins.float().contiguous(), dirs.float().contiguous()
        packed, count, cand = march_triton.compact(origins, dirs, near, far, grid, step, n_steps)
        kernel = march_triton.FieldKernel(field)
        codes, dir_codes = kernel.ray_tables(dirs, cond, latent)
    else:
        packed, count, cand = compact_samples(origins, dirs, near, far, grid, step, n_steps)
    T = torch.ones(R, device=dev)
    color = torch.zeros(R, 3, device=dev)
    evaluated, rounds, start = 0, 0, 0
    active = torch.nonzero(count > 0)[:, 0]  # rays with samples left, still transparent enough
    while active.numel():
        if fused:
            P = _round_fused(kernel, origins, dirs, codes, dir_codes, packed, count, active, start, per_round, step,
                             T, color, first_hit, first_opacity)
        else:
            P = _round_pytorch(field, origins, dirs, cond, latent, packed, active, start, per_round, step, T,
                               color, first_hit, first_opacity)
        evaluated += P
        rounds += 1
        start += per_round
        active = active[(T[active] > min_transmittance) & (count[active] > start)]
    color = color + T[:, None] * background.float()
    stats = MarchStats(int(cand.sum()), int(count.sum()), evaluated, rounds)
    return color, 1.0 - T, stats
