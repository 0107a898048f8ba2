"""Multiresolution hash encoding (Instant-NGP, Mueller et al. 2022), pure PyTorch.

Input: points normalised to the unit cube, x in [0, 1]^3 (not [-1, 1]); values outside are
clamped to the cube (callers mask such points, see ``fast_field.FastField``).

* L levels with resolutions N_l = floor(N_min * b^l), b = exp((ln N_max - ln N_min) / (L - 1)),
  so N_0 = N_min (base_res, 16) and N_{L-1} = N_max (max_res, 1024: 0.4 mm in a 40 cm box).
* Level l has grid vertices at x = k / N_l, k = 0..N_l per axis, (N_l + 1)^3 of them (the
  "aligned corners" layout: no half-cell offset between levels, unlike Instant-NGP's CUDA
  code; the encoding is the same family).
* A level whose dense grid fits in the table, (N_l + 1)^3 <= T, indexes it directly:
  i + j (N_l + 1) + k (N_l + 1)^2, size (N_l + 1)^3. The other levels use the spatial hash
  (i * 1 xor j * 2654435761 xor k * 805459861) mod T (the primes of the paper; T = 2^log2_table
  is a power of two, so mod T keeps the low bits and equals the paper's uint32 arithmetic).
  Resolutions increase with l, so the dense levels are a prefix.
* All levels' tables are ONE parameter (sum of level sizes, F) with per-level offsets: the 8
  corner lookups of all levels are one ``index_select`` (the forward has no loop over
  levels). Features of a point: trilinear interpolation of its cell's 8 corners, per level,
  concatenated level-major: (N, L * F) = [level 0 features, level 1 features, ...].
* Table init uniform(-1e-4, 1e-4) as in the paper. Gradients reach the table through the
  gather (``index_select``'s backward is an ``index_add_``), only at touched entries.

Memory: per point the forward keeps the (L, 8) int32 corner indexes and float32 weights and
materialises (L, 8, F) gathered features (N = 400k, L = 16, F = 2: about 400 MB each on the
largest temporaries). The encoding runs in float32 with autocast disabled.

Corner order (the 8 in (N, L, 8)): corner c = 4 bx + 2 by + bz, (bx, by, bz) in {0, 1}^3,
the corner at cell origin + (bx, by, bz).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import hashgrid_triton

PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's spatial-hash primes (x, y, z)


def growth_factor(levels: int, base_res: int, max_res: int) -> float:
    """b = exp((ln N_max - ln N_min) / (L - 1)) (1 for a single level)."""
    if levels <= 1:
        return 1.0
    return math.exp((math.log(max_res) - math.log(base_res)) / (levels - 1))


def level_resolutions(levels: int, base_res: int, max_res: int) -> list[int]:
    """[N_0, ..., N_{L-1}], N_l = floor(N_min * b^l) (a 1e-6 guard so N_{L-1} == N_max)."""
    b = growth_factor(levels, base_res, max_res)
    return [int(math.floor(base_res * b**lvl + 1e-6)) for lvl in range(levels)]


def spatial_hash(corners: torch.Tensor, table_size: int) -> torch.Tensor:
    """Reference hash: integer corners (..., 3) -> (...) int64 in [0, T).

    (i * 1 xor j * 2654435761 xor k * 805459861) mod T, T a power of two (the low bits of the
    products are those of the paper's wrapping uint32 products).
    """
    c = corners.long()
    h = (c[..., 0] * PRIMES[0]) ^ (c[..., 1] * PRIMES[1]) ^ (c[..., 2] * PRIMES[2])
    return h & (table_size - 1)


def trilinear_weights(frac: torch.Tensor) -> torch.Tensor:
    """Fractional positions in the cell (..., 3) -> corner weights (..., 8), corner 4bx+2by+bz.

    w_c = prod_d (frac_d if b_d else 1 - frac_d); the 8 weights sum to 1.
    """
    w = torch.stack([1.0 - frac, frac], -1)  # (..., 3, 2)
    wx, wy, wz = w[..., 0, :], w[..., 1, :], w[..., 2, :]  # (..., 2) each
    return (wx[..., :, None, None] * wy[..., None, :, None] * wz[..., None, None, :]).flatten(-3)


class HashGrid(nn.Module):
    """Instant-NGP multiresolution hash encoding: x (..., 3) in [0, 1]^3 -> (..., L * F).

    Attributes: ``resolutions`` [N_l], ``dense`` [bool] (directly indexed levels, a prefix),
    ``sizes`` [entries per level], ``offsets`` [first row of each level in ``table``],
    ``table_size`` T, ``n_dense`` (number of dense levels), ``out_dim`` = L * F,
    ``table`` the (sum(sizes), F) parameter.
    """

    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 19, base_res: int = 16,
                 max_res: int = 1024, init_scale: float = 1e-4):
        super().__init__()
        if levels < 1 or features < 1 or base_res < 1 or max_res < base_res:
            raise ValueError("need levels >= 1, features >= 1, 1 <= base_res <= max_res")
        self.levels, self.features = levels, features
        self.table_size = 2**log2_table
        self.out_dim = levels * features
        self.resolutions = level_resolutions(levels, base_res, max_res)
        self.dense = [(r + 1) ** 3 <= self.table_size for r in self.resolutions]
        self.n_dense = sum(self.dense)
        if self.dense != [True] * self.n_dense + [False] * (levels - self.n_dense):
            raise AssertionError("dense levels must be a prefix")  # resolutions are non-decreasing
        self.sizes = [(r + 1) ** 3 if d else self.table_size for r, d in zip(self.resolutions, self.dense)]
        self.offsets = [0]
        for s in self.sizes[:-1]:
            self.offsets.append(self.offsets[-1] + s)
        total = self.offsets[-1] + self.sizes[-1]
        if total >= 2**31:
            raise ValueError(f"table of {total} rows: int32 indexes overflow")
        # per-level constants, (L,) / (L, 3): the forward is vectorised over levels
        self.register_buffer("res", torch.tensor(self.resolutions, dtype=torch.float32), persistent=False)
        # per-axis multipliers: dense strides (1, N+1, (N+1)^2) or hash primes mod T
        mult = [[1, r + 1, (r + 1) ** 2] if d else [p & (self.table_size - 1) for p in PRIMES]
                for r, d in zip(self.resolutions, self.dense)]
        self.register_buffer("mult", torch.tensor(mult, dtype=torch.int64), persistent=False)
        self.register_buffer("level_offset", torch.tensor(self.offsets, dtype=torch.int32), persistent=False)
        self.table = nn.Parameter(torch.empty(total, features).uniform_(-init_scale, init_scale))
        self.use_fused = True  # the Triton forward where it applies (fused_ok); False: PyTorch only

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, features={self.features}, T=2^{self.table_size.bit_length() - 1}, "
                f"res={self.resolutions[0]}..{self.resolutions[-1]}, dense_levels={self.n_dense}, "
                f"rows={self.table.shape[0]}")

    def cells(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3) in [0, 1]^3 -> cell origins (N, L, 3) int64 and fractions (N, L, 3) (table dtype).

        pos = x * N_l; origin = floor(pos) clamped to [0, N_l - 1] (so x = 1 lands in the last
        cell with fraction 1); fraction = pos - origin in [0, 1].
        """
        pos = x.to(self.res.dtype).clamp(0.0, 1.0)[:, None, :] * self.res[:, None]  # (N, L, 3)
        origin = torch.minimum(pos.floor(), (self.res - 1.0)[:, None])
        return origin.long(), pos - origin

    def corner_indices(self, origin: torch.Tensor) -> torch.Tensor:
        """Cell origins (N, L, 3) int64 -> rows of ``table`` (N, L, 8) int32, corner 4bx+2by+bz.

        Per axis d the two corner coordinates times the level's multiplier (dense stride or
        prime mod T), reduced mod T, are (N, L, 2) int32; dense levels add the three axes,
        hashed levels xor them (mod T already taken: xor of residues = residue of xor);
        then the level offset is added.
        """
        mask = self.table_size - 1
        ax = []
        for d in range(3):  # axes, not levels
            c = torch.stack([origin[..., d], origin[..., d] + 1], -1)  # (N, L, 2)
            ax.append(((c * self.mult[:, d, None]) & mask).int())
        a, b, c = ax[0][..., :, None, None], ax[1][..., None, :, None], ax[2][..., None, None, :]
        nd = self.n_dense
        parts = []
        if nd > 0:
            parts.append((a[:, :nd] + b[:, :nd] + c[:, :nd]).flatten(-3))  # (N, Ld, 8)
        if nd < self.levels:
            parts.append((a[:, nd:] ^ b[:, nd:] ^ c[:, nd:]).flatten(-3))  # (N, Lh, 8)
        idx = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
        return idx + self.level_offset[:, None]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) in [0, 1]^3 -> per-level features (N, L, F), in the table's dtype (float32)."""
        origin, frac = self.cells(x)
        idx = self.corner_indices(origin)  # (N, L, 8)
        w = trilinear_weights(frac)  # (N, L, 8)
        feats = self.table.index_select(0, idx.reshape(-1)).view(*idx.shape, self.features)
        return (feats * w[..., None]).sum(-2)  # (N, L, F)

    def fused_ok(self, x: torch.Tensor) -> bool:
        """Whether :mod:`.hashgrid_triton`'s fused kernel computes this forward: a CUDA input,
        a float32 table, no gradient wanted (rendering) and Triton available."""
        return (x.is_cuda and self.table.dtype == torch.float32 and self.use_fused
                and not (torch.is_grad_enabled() and (self.table.requires_grad or x.requires_grad))
                and hashgrid_triton.available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., 3) in [0, 1]^3 -> (..., L * F) float32 (level-major), autocast disabled.
        Without gradient on CUDA the fused kernel of :mod:`.hashgrid_triton` computes it.

        (float64 after ``.double()``: the computation follows the table's dtype, not x's.)
        """
        lead = x.shape[:-1]
        if self.fused_ok(x):  # (a first run that fails: PyTorch from now on)
            out = hashgrid_triton.first_use(hashgrid_triton, lambda: hashgrid_triton.hash_encode(self, x.reshape(-1, 3)),
                                            hashgrid_triton.disable)
            if out is not None:
                return out.reshape(*lead, self.out_dim)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.encode(x.reshape(-1, 3))
        return out.reshape(*lead, self.out_dim)
