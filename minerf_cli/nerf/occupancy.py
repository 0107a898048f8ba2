"""Occupancy grid: a coarse map of where the field has density, for empty-space skipping.

Instant-NGP / nerfacc style, over the field's head box and shared by all identities (one
field renders everyone, so one grid does too):

* ``density`` (G, G, G) float32 buffer, cell (ix, iy, iz) along head-space (x, y, z): a
  decaying maximum of the density sampled in the cell,
  density <- max(decay * density, sigma(random point in the cell; codes of a random
  training frame)), one random frame per cell and update, so over the updates every cell
  sees many identities and expressions;
* ``occupied`` (G, G, G) bool buffer: density > ``sigma_threshold``, dilated by one cell
  (a neighbour of an occupied cell counts as occupied: an expression that was never drawn
  for a cell can still move the surface a little);
* before the first update (``updates == 0``) every cell is occupied, so a fresh grid
  changes nothing.

``sigma_threshold`` is the density whose opacity over one marching step is
``alpha_threshold``: sigma_th = -ln(1 - a) / step, step in cm (rays have unit directions).

The grid is part of the model's state dict (its buffers), so checkpoints carry it.
Shapes: P points, G grid resolution, C condition dim, L latent dim.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

DensityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (P,3), (P,C), (P,L) -> (P,)


def sigma_threshold(alpha_threshold: float, step: float) -> float:
    """Density whose opacity over ``step`` cm is ``alpha_threshold``: -ln(1 - a) / step."""
    return -math.log1p(-alpha_threshold) / step


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """(G, G, G) bool -> (G, G, G) bool, true where any of the 3x3x3 neighbours is true."""
    m = mask[None, None].float()
    return F.max_pool3d(m, kernel_size=3, stride=1, padding=1)[0, 0] > 0


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without a host sync on CUDA (through pinned memory: a copy
    from pageable memory waits for the GPU to finish its queue)."""
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class OccupancyGrid(nn.Module):
    """Binary occupancy of the head box (module docstring).

    ``box_min``, ``box_max`` head-space bounds (cm), ``resolution`` G cells per axis,
    ``step`` the marching step (cm) the threshold is set for, ``alpha_threshold``.
    """

    def __init__(self, box_min, box_max, resolution: int = 64, step: float = 0.25,
                 alpha_threshold: float = 0.005, decay: float = 0.95):
        super().__init__()
        if resolution < 2:
            raise ValueError("occupancy grid resolution must be >= 2")
        self.resolution, self.decay = int(resolution), float(decay)
        self.alpha_threshold = float(alpha_threshold)
        self.sigma_threshold = sigma_threshold(alpha_threshold, step)
        bmin = torch.tensor(box_min, dtype=torch.float32)
        bmax = torch.tensor(box_max, dtype=torch.float32)
        self.register_buffer("box_min", bmin, persistent=False)
        self.register_buffer("cell", (bmax - bmin) / resolution, persistent=False)
        G = self.resolution
        self.register_buffer("density", torch.zeros(G, G, G))
        self.register_buffer("occupied", torch.ones(G, G, G, dtype=torch.bool))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, sigma_threshold={self.sigma_threshold:.4g}, decay={self.decay}"

    # -- lookups --------------------------------------------------------------------------
    def cell_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (..., 3) head space -> flat cell index (...,) int64 in [0, G^3) and inside (...,) bool
        (points outside the box are clamped to its border cells and flagged outside)."""
        G = self.resolution
        u = (x.float() - self.box_min) / self.cell  # (..., 3) in cells
        inside = ((u >= 0) & (u <= G)).all(-1)
        ijk = u.floor().long().clamp(0, G - 1)
        return (ijk[..., 0] * G + ijk[..., 1]) * G + ijk[..., 2], inside

    def is_occupied(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., 3) head space -> (...,) bool: inside the box and in an occupied cell."""
        idx, inside = self.cell_index(x)
        return self.occupied.reshape(-1)[idx] & inside

    def fraction(self) -> torch.Tensor:
        """Share of occupied cells, a 0-d tensor (no host sync)."""
        return self.occupied.float().mean()

    def occupied_box(self) -> tuple[list[float], list[float]] | None:
        """Head-space bounds (min, max) of the occupied cells, None if no cell is occupied:
        rays that miss this box have nothing to render. Computed (a host sync) once per
        state of ``occupied``: kept until the tensor is modified or replaced."""
        key = (self.occupied.data_ptr(), self.occupied._version)
        if getattr(self, "_box_key", None) != key:
            ijk = torch.nonzero(self.occupied)
            box = None
            if ijk.numel():
                lo = self.box_min + ijk.amin(0).float() * self.cell
                hi = self.box_min + (ijk.amax(0).float() + 1.0) * self.cell
                box = lo.tolist(), hi.tolist()
            self._box_key, self._box = key, box
        return self._box

    def set_threshold(self, alpha_threshold: float, step: float, dilation: bool = True) -> None:
        """Re-derive ``occupied`` from the sampled densities for another opacity threshold
        or marching step (rendering settings); a grid never updated stays all-occupied."""
        self.alpha_threshold = float(alpha_threshold)
        self.sigma_threshold = sigma_threshold(alpha_threshold, step)
        if int(self.updates) > 0:
            occ = self.density > self.sigma_threshold
            self.occupied.copy_(dilate(occ) if dilation else occ)

    # -- updates --------------------------------------------------------------------------
    def cell_points(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One uniformly random point in every cell -> (G^3, 3) head space, cell order of
        :meth:`cell_index`."""
        G = self.resolution
        dev = self.density.device
        r = torch.arange(G, device=dev, dtype=torch.float32)
        ijk = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        jitter = to_device(torch.rand(ijk.shape, generator=generator, device="cpu"), dev)
        return self.box_min + (ijk + jitter) * self.cell

    @torch.no_grad()
    def update(self, density_fn: DensityFn, cond: torch.Tensor, latent: torch.Tensor,
               chunk: int = 262144, generator: torch.Generator | None = None) -> None:
        """Sample every cell once and refresh the grid.

        density_fn(points (P, 3), cond (P, C), latent (P, L)) -> density (P,);
        cond (G^3, C), latent (G^3, L): the codes each cell is evaluated with (callers draw
        a random training frame per cell). The first update replaces the initial
        all-occupied state; later ones keep max(decay * old, new).
        """
        pts = self.cell_points(generator)
        new = torch.cat([density_fn(pts[s:s + chunk], cond[s:s + chunk], latent[s:s + chunk]).float()
                         for s in range(0, len(pts), chunk)]).reshape(self.density.shape)
        new = torch.nan_to_num(new, nan=0.0, posinf=1e4)
        first = (self.updates == 0).float()
        self.density.copy_(torch.maximum(self.density * self.decay * (1.0 - first), new))
        self.occupied.copy_(dilate(self.density > self.sigma_threshold))
        self.updates += 1
