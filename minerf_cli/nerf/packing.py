"""Packed training passes: run a field only at the samples that can matter.

The paper's hierarchical sampler puts 64 + 128 samples on every ray wherever the ray is;
most of them lie in empty space around the head, where the field is asked for nothing but
transparency. Instant-NGP and nerfacc skip such samples with an occupancy grid; a packed
pass does the same inside the paper's sampler:

* a sample in an empty cell of the model's :class:`.occupancy.OccupancyGrid` (density
  below the grid's threshold at every identity and expression its updates have drawn,
  with a one-cell margin) gets density 0 and colour 0 without running the field;
* the last sample of a ray is the background's (:mod:`.render`'s rule: its colour is the
  background pixel and its opacity 1 whatever the field says), so it is never run either;
* in the fine pass, a sample hidden behind what the coarse pass found opaque (coarse
  transmittance at the start of its coarse interval at most :data:`HIDDEN_T`, nerfacc's
  early-termination threshold) is skipped too: its weight and every gradient through it
  are at most that share of the ray's colour;
* the rest are gathered into one batch of ``capacity`` points (P), run through the field
  and scattered back to (R, S).

``capacity`` is fixed per call so the training step needs no host sync (the number of
kept samples stays on the device, ``torch.nonzero_static``); :class:`PackBudget` sets it
from the counts of earlier steps with a margin. Samples beyond it (a step with more kept
samples than any before it) are dropped like empty ones and counted.

Shapes: R rays, S samples per ray, P = capacity, C condition dim, L latent dim.
"""

from __future__ import annotations

import math

import torch

from .occupancy import OccupancyGrid

HIDDEN_T = 1e-4  # fine samples behind coarse transmittance below this are not run


def kept_samples(grid: OccupancyGrid, points: torch.Tensor) -> torch.Tensor:
    """points (R, S, 3) head space -> (R, S) bool: in an occupied cell and not the last
    sample of its ray (the background's)."""
    keep = grid.is_occupied(points)
    keep[:, -1] = False
    return keep


def visible_samples(t_coarse: torch.Tensor, weights_coarse: torch.Tensor, t: torch.Tensor,
                    eps: float | None = None) -> torch.Tensor:
    """t_coarse (R, Sc) sorted, weights_coarse (R, Sc) of the coarse pass, t (R, S) sorted
    fine samples -> (R, S) bool: the coarse transmittance T_i = 1 - sum_{j<i} w_j at the
    start of the coarse interval [t_i, t_{i+1}) holding each sample is above ``eps`` (T
    only falls along the ray, so T_i bounds it from above). Samples before the first
    coarse one read T_0 = 1. ``eps`` defaults to :data:`HIDDEN_T`."""
    eps = HIDDEN_T if eps is None else eps
    w = weights_coarse.float()
    T = 1.0 - (torch.cumsum(w, -1) - w)
    i = torch.searchsorted(t_coarse.contiguous(), t.contiguous(), right=True) - 1
    return T.gather(-1, i.clamp(0, T.shape[-1] - 1)) > eps


def pack_indices(keep: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keep (R, S) bool -> (index (P,) int64 into the flattened (R * S) samples, padded
    with R * S; count 0-d int64, the number of kept samples, which may exceed P). No host sync."""
    flat = keep.reshape(-1)
    idx = torch.nonzero_static(flat, size=capacity, fill_value=flat.numel())[:, 0]
    return idx, flat.sum()


def packed_field(field, points: torch.Tensor, dirs: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor,
                 keep: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``field`` at the kept samples only.

    points (R, S, 3), dirs (R, 3), cond (R, C) or (C,), latent (R, L) or (L,), keep (R, S)
    -> density (R, S) float32, rgb (R, S, 3) float32 (0 where not kept), count (0-d int64).
    Gradients reach the field through the kept samples."""
    R, S, _ = points.shape
    idx, count = pack_indices(keep, capacity)
    ray = torch.clamp(idx // S, max=R - 1)  # padding rows read the last ray; their output is discarded
    # index_select, not x[idx]: its gradient is an atomic index_add, where advanced indexing's
    # sorts the many repeated ray indices (measured on an H100: 60 ms a call)
    x = torch.cat([points.reshape(-1, 3), points.new_zeros(1, 3)]).index_select(0, idx)
    c = cond if cond.dim() == 1 else cond.index_select(0, ray)
    lat = latent if latent.dim() == 1 else latent.index_select(0, ray)
    density_p, rgb_p = field(x[:, None, :], dirs.index_select(0, ray), c, lat)  # (P, 1), (P, 1, 3)
    density = points.new_zeros(R * S + 1).index_put((idx,), density_p[:, 0].float())
    rgb = points.new_zeros(R * S + 1, 3).index_put((idx,), rgb_p[:, 0].float())
    return density[:-1].reshape(R, S), rgb[:-1].reshape(R, S, 3), count


class PackBudget:
    """Capacities of the packed coarse and fine passes, adapted without a per-step sync.

    ``limits`` (coarse, fine): the most samples a pass can keep (rays x (samples - 1)).
    Starts at the limits; :meth:`record` keeps the largest counts on the device;
    :meth:`adapt` (called where the trainer syncs anyway) sets each capacity to the peak
    since the last call times ``margin``, rounded up to ``quantum``, and returns the share
    of samples kept and dropped since then. A capacity only shrinks when the new one is
    below ``shrink`` times it: each change costs a new CUDA graph (:mod:`..step_runner`)."""

    def __init__(self, limits: tuple[int, int], margin: float = 1.3, quantum: int = 4096, shrink: float = 0.8):
        self.limits = tuple(int(v) for v in limits)
        self.capacity = list(self.limits)
        self.margin, self.quantum, self.shrink = float(margin), int(quantum), float(shrink)
        self._peak = self._kept = self._dropped = None
        self._steps = 0

    def record(self, counts: torch.Tensor) -> None:
        """counts (2,) int64 on the device: kept samples of the coarse and fine passes."""
        over = torch.stack([(counts[k] - cap).clamp_min(0) for k, cap in enumerate(self.capacity)])
        if self._peak is None:
            self._peak, self._kept, self._dropped = counts.clone(), counts.clone(), over
        else:
            self._peak = torch.maximum(self._peak, counts)
            self._kept = self._kept + counts
            self._dropped = self._dropped + over
        self._steps += 1

    def adapt(self) -> dict:
        """Read the counts (a host sync), set the capacities -> {"kept": share of samples
        run, "dropped": share dropped for want of room} since the last call (empty if none)."""
        if self._peak is None:
            return {}
        peak, kept, dropped = (t.tolist() for t in (self._peak, self._kept, self._dropped))
        total = self._steps * sum(self.limits)
        for k, (p, limit) in enumerate(zip(peak, self.limits)):
            new = min(limit, max(self.quantum, math.ceil(p * self.margin / self.quantum) * self.quantum))
            if new > self.capacity[k] or new < self.shrink * self.capacity[k]:
                self.capacity[k] = new
        self._peak = self._kept = self._dropped = None
        self._steps = 0
        return {"kept": sum(kept) / total, "dropped": sum(dropped) / total}
