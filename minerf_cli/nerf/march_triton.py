"""Fused Triton kernels for marching a fast field (rendering, no gradient).

:func:`.marching.march_render` in plain PyTorch runs some forty kernels per round over
(rays, samples) tables: packing the occupied samples, gathering per-sample codes, the hash
encoding, six linear layers with their casts and activations, the cumulative products of
the compositing. At 4-6 M samples a 512x512 frame that traffic, not arithmetic, is the
render time. Three kernels replace it:

* :func:`compact` -- per ray, the uniform steps t_k = near + (k + 1/2) step inside
  [near, far) that fall in occupied cells of the grid, written front to back to the left of
  an (R, n_steps) table (inf after them), with their count and the number of steps inside
  [near, far) (the candidates);
* :func:`field_points` -- the whole :class:`~.fast_field.FastField` for a flat list of
  samples (ray index, t): the point o + t d, its hash-grid features (as
  :func:`.hashgrid_triton.hash_encode`), the first density layer accumulated level by level
  in float32 plus the ray's code (W_c cond + W_l latent + b, :meth:`FastField.ray_codes`),
  then the density MLP's hidden and output layers and the colour MLP (its first layer plus
  the ray's direction code, :meth:`FastField.dir_codes`) as float16 tensor-core products
  with float32 accumulation -> density (P,), rgb (P, 3);
* :func:`composite` -- one round of front-to-back compositing for the live rays, whose
  samples of the round are contiguous in the flat list: alpha = 1 - exp(-sigma step),
  colour += T alpha rgb, T *= 1 - alpha, and the first sample at which the opacity passes
  ``first_opacity`` (the two-pass renderer's first hit).

The PyTorch path stays the reference and the CPU path; :func:`supports` says when these
kernels apply (a CUDA fast field with 2 features per level, no region attention, hidden
widths powers of two >= 16, Triton importable, ``MINERF_TRITON`` not 0, ``enabled``). If the
first fused march of a process fails (Triton cannot compile for this GPU, say),
:func:`.marching.march_render` turns them off (``enabled``, ``disabled_reason``) and renders
in PyTorch; the commands report it once on stderr.
``tests/test_march_fused.py`` compares both on the GPU (and on the CPU under Triton's
interpreter, ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from . import hashgrid_triton
from .hashgrid_triton import triton

if triton is not None:
    import triton.language as tl

enabled = True  # False: march in PyTorch (benchmarks compare the two)
verified = False  # a fused march has completed in this process
disabled_reason: str | None = None  # why the kernels were turned off here (set by .marching's fallback)


def disable(reason: str) -> None:
    """Turn the marching kernels off for the process, with why (.marching's fallback)."""
    global enabled, disabled_reason
    enabled, disabled_reason = False, reason
OUT_PAD = 16  # the colour output (3) and the density output (1 + geo) are padded to 16 columns
TABLE_FEATURES = 2  # features per hash level the field kernel reads


def _pow2_at_least_16(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


def supports(field, device: torch.device) -> bool:
    """Whether :func:`field_points` can evaluate ``field`` on ``device`` (module docstring)."""
    from .fast_field import FastField

    return (enabled and device.type == "cuda" and hashgrid_triton.available() and isinstance(field, FastField)
            and field.attention is None and field.grid.features == TABLE_FEATURES
            and field.grid.table.dtype == torch.float32 and field.grid.use_fused
            and _pow2_at_least_16(field.density_hidden.out_features)
            and _pow2_at_least_16(field.color_hidden.out_features)
            and 1 + field.geo_features <= OUT_PAD)


if triton is not None:

    @triton.jit(do_not_specialize=["R", "n_steps"])
    def _compact_kernel(o_ptr, d_ptr, near_ptr, far_ptr, occ_ptr, bmin_ptr, cell_ptr, packed_ptr, count_ptr,
                        cand_ptr, R, step, n_steps, G: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = rows < R
        ox = tl.load(o_ptr + rows * 3 + 0, mask=ok, other=0.0)
        oy = tl.load(o_ptr + rows * 3 + 1, mask=ok, other=0.0)
        oz = tl.load(o_ptr + rows * 3 + 2, mask=ok, other=0.0)
        dx = tl.load(d_ptr + rows * 3 + 0, mask=ok, other=0.0)
        dy = tl.load(d_ptr + rows * 3 + 1, mask=ok, other=0.0)
        dz = tl.load(d_ptr + rows * 3 + 2, mask=ok, other=0.0)
        near = tl.load(near_ptr + rows, mask=ok, other=0.0)
        far = tl.load(far_ptr + rows, mask=ok, other=0.0)
        bx, by, bz = tl.load(bmin_ptr + 0), tl.load(bmin_ptr + 1), tl.load(bmin_ptr + 2)
        cx, cy, cz = tl.load(cell_ptr + 0), tl.load(cell_ptr + 1), tl.load(cell_ptr + 2)
        count = tl.zeros([BLOCK], dtype=tl.int32)
        cand = tl.zeros([BLOCK], dtype=tl.int32)
        for k in range(n_steps):
            t = near + (k + 0.5) * step
            valid = ok & (t < far)
            ux = (ox + dx * t - bx) / cx
            uy = (oy + dy * t - by) / cy
            uz = (oz + dz * t - bz) / cz
            inside = (ux >= 0) & (ux <= G) & (uy >= 0) & (uy <= G) & (uz >= 0) & (uz <= G)
            ix = tl.minimum(tl.maximum(tl.floor(ux), 0.0), G - 1.0).to(tl.int32)
            iy = tl.minimum(tl.maximum(tl.floor(uy), 0.0), G - 1.0).to(tl.int32)
            iz = tl.minimum(tl.maximum(tl.floor(uz), 0.0), G - 1.0).to(tl.int32)
            occ = tl.load(occ_ptr + (ix * G + iy) * G + iz, mask=valid, other=0)
            hit = valid & inside & (occ != 0)
            tl.store(packed_ptr + rows.to(tl.int64) * n_steps + count, t, mask=hit)
            count += hit.to(tl.int32)
            cand += valid.to(tl.int32)
        tl.store(count_ptr + rows, count, mask=ok)
        tl.store(cand_ptr + rows, cand, mask=ok)

    @triton.jit(do_not_specialize=["code_stride", "N"])
    def _field_kernel(ray_ptr, t_ptr, o_ptr, d_ptr, bmin_ptr, bsize_ptr,
                      table_ptr, res_ptr, mult_ptr, offset_ptr, w1_ptr, code_ptr, code_stride,
                      w2_ptr, b2_ptr, w3_ptr, b3_ptr, w4_ptr, dcode_ptr, w5_ptr, b5_ptr, w6_ptr, b6_ptr,
                      sigma_ptr, rgb_ptr, N, density_bias,
                      n_dense: tl.constexpr, L: tl.constexpr, MASK: tl.constexpr, H: tl.constexpr,
                      CH: tl.constexpr, OUT: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = rows < N
        r = tl.load(ray_ptr + rows, mask=ok, other=0).to(tl.int64)
        t = tl.load(t_ptr + rows, mask=ok, other=0.0)
        # the point, in the head box's unit cube
        x = (tl.load(o_ptr + r * 3 + 0, mask=ok, other=0.0) + tl.load(d_ptr + r * 3 + 0, mask=ok, other=0.0) * t
             - tl.load(bmin_ptr + 0)) / tl.load(bsize_ptr + 0)
        y = (tl.load(o_ptr + r * 3 + 1, mask=ok, other=0.0) + tl.load(d_ptr + r * 3 + 1, mask=ok, other=0.0) * t
             - tl.load(bmin_ptr + 1)) / tl.load(bsize_ptr + 1)
        z = (tl.load(o_ptr + r * 3 + 2, mask=ok, other=0.0) + tl.load(d_ptr + r * 3 + 2, mask=ok, other=0.0) * t
             - tl.load(bmin_ptr + 2)) / tl.load(bsize_ptr + 2)
        inside = (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1) & (z >= 0) & (z <= 1)
        x = tl.minimum(tl.maximum(x, 0.0), 1.0)
        y = tl.minimum(tl.maximum(y, 0.0), 1.0)
        z = tl.minimum(tl.maximum(z, 0.0), 1.0)
        hcols = tl.arange(0, H)
        # hash features, level by level, straight into the first density layer (float32)
        a = tl.zeros([BLOCK, H], dtype=tl.float32)
        for lvl in tl.static_range(L):
            res = tl.load(res_ptr + lvl)
            m0 = tl.load(mult_ptr + lvl * 3 + 0).to(tl.int32)
            m1 = tl.load(mult_ptr + lvl * 3 + 1).to(tl.int32)
            m2 = tl.load(mult_ptr + lvl * 3 + 2).to(tl.int32)
            off = tl.load(offset_ptr + lvl)
            ix, fx = hashgrid_triton.cell(x, res)
            iy, fy = hashgrid_triton.cell(y, res)
            iz, fz = hashgrid_triton.cell(z, res)
            f0 = tl.zeros([BLOCK], dtype=tl.float32)
            f1 = tl.zeros([BLOCK], dtype=tl.float32)
            for c in tl.static_range(8):
                idx, w = hashgrid_triton.corner(ix, iy, iz, fx, fy, fz, m0, m1, m2, c, lvl < n_dense, MASK)
                idx = idx + off
                if HALF:  # both float16 features of a row in one 32-bit load
                    v = tl.load(table_ptr + idx, mask=ok, other=0)
                    f0 += (v & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32) * w
                    f1 += ((v >> 16) & 0xFFFF).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32) * w
                else:
                    f0 += tl.load(table_ptr + idx * 2 + 0, mask=ok, other=0.0) * w
                    f1 += tl.load(table_ptr + idx * 2 + 1, mask=ok, other=0.0) * w
            a += f0[:, None] * tl.load(w1_ptr + (2 * lvl) * H + hcols)[None, :]
            a += f1[:, None] * tl.load(w1_ptr + (2 * lvl + 1) * H + hcols)[None, :]
        a += tl.load(code_ptr + r[:, None] * code_stride + hcols[None, :], mask=ok[:, None], other=0.0)
        a = tl.maximum(a, 0.0).to(tl.float16)
        # density MLP: hidden, output (1 + geo, padded to OUT)
        w2 = tl.load(w2_ptr + hcols[:, None] * H + hcols[None, :])
        a = tl.maximum(tl.dot(a, w2) + tl.load(b2_ptr + hcols)[None, :], 0.0).to(tl.float16)
        ocols = tl.arange(0, OUT)
        w3 = tl.load(w3_ptr + hcols[:, None] * OUT + ocols[None, :])
        out = tl.dot(a, w3) + tl.load(b3_ptr + ocols)[None, :]  # (BLOCK, OUT)
        raw = tl.sum(tl.where(ocols[None, :] == 0, out, 0.0), axis=1)
        sigma = tl.where(inside, tl.exp(raw + density_bias), 0.0)
        tl.store(sigma_ptr + rows, sigma, mask=ok)
        # colour MLP: [geo; gamma(v)] (the gamma(v) part and the bias per ray), hidden, rgb
        ccols = tl.arange(0, CH)
        w4 = tl.load(w4_ptr + ocols[:, None] * CH + ccols[None, :])  # row 0 (the density) is zero
        c = tl.dot(out.to(tl.float16), w4)
        c += tl.load(dcode_ptr + r[:, None] * CH + ccols[None, :], mask=ok[:, None], other=0.0)
        c = tl.maximum(c, 0.0).to(tl.float16)
        w5 = tl.load(w5_ptr + ccols[:, None] * CH + ccols[None, :])
        c = tl.maximum(tl.dot(c, w5) + tl.load(b5_ptr + ccols)[None, :], 0.0).to(tl.float16)
        w6 = tl.load(w6_ptr + ccols[:, None] * OUT + ocols[None, :])
        rgb = tl.sigmoid(tl.dot(c, w6) + tl.load(b6_ptr + ocols)[None, :])
        tl.store(rgb_ptr + rows[:, None] * 3 + ocols[None, :], rgb, mask=ok[:, None] & (ocols[None, :] < 3))

    @triton.jit(do_not_specialize=["A"])
    def _composite_kernel(active_ptr, off_ptr, n_ptr, sigma_ptr, rgb_ptr, t_ptr, T_ptr, color_ptr, hit_ptr,
                          A, step, first_opacity, HIT: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr):
        j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = j < A
        ray = tl.load(active_ptr + j, mask=ok, other=0)
        off = tl.load(off_ptr + j, mask=ok, other=0)
        n = tl.load(n_ptr + j, mask=ok, other=0)
        T = tl.load(T_ptr + ray, mask=ok, other=1.0)
        cr = tl.load(color_ptr + ray * 3 + 0, mask=ok, other=0.0)
        cg = tl.load(color_ptr + ray * 3 + 1, mask=ok, other=0.0)
        cb = tl.load(color_ptr + ray * 3 + 2, mask=ok, other=0.0)
        for k in tl.static_range(K):
            v = ok & (k < n)
            p = off + k
            alpha = 1.0 - tl.exp(-tl.load(sigma_ptr + p, mask=v, other=0.0) * step)
            w = T * alpha
            cr += w * tl.load(rgb_ptr + p * 3 + 0, mask=v, other=0.0)
            cg += w * tl.load(rgb_ptr + p * 3 + 1, mask=v, other=0.0)
            cb += w * tl.load(rgb_ptr + p * 3 + 2, mask=v, other=0.0)
            T_next = T * (1.0 - alpha)
            if HIT:
                cross = v & (1.0 - T_next > first_opacity) & (1.0 - T <= first_opacity)
                tl.store(hit_ptr + ray, tl.load(t_ptr + p, mask=v, other=0.0), mask=cross)
            T = T_next
        tl.store(T_ptr + ray, T, mask=ok)
        tl.store(color_ptr + ray * 3 + 0, cr, mask=ok)
        tl.store(color_ptr + ray * 3 + 1, cg, mask=ok)
        tl.store(color_ptr + ray * 3 + 2, cb, mask=ok)


def compact(origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor, grid,
            step: float, n_steps: int, block: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`.marching.compact_samples`: rays (R, 3), near, far (R,), an
    :class:`~.occupancy.OccupancyGrid` -> t (R, M) (inf after each ray's occupied samples),
    count (R,) int64, candidates (R,) int64."""
    R = origins.shape[0]
    dev = origins.device
    packed = torch.full((R, max(n_steps, 1)), float("inf"), device=dev)
    count = torch.zeros(R, device=dev, dtype=torch.int32)
    cand = torch.zeros(R, device=dev, dtype=torch.int32)
    if R:
        occ = grid.occupied.contiguous().view(torch.uint8)
        _compact_kernel[(triton.cdiv(R, block),)](
            origins.float().contiguous(), dirs.float().contiguous(), near.float().contiguous(),
            far.float().contiguous(), occ, grid.box_min, grid.cell, packed, count, cand, R, float(step),
            int(n_steps), G=grid.resolution, BLOCK=block)
    M = int(count.max()) if R else 0
    return packed[:, :M], count.long(), cand.long()


def _pad_t(w: torch.Tensor, rows: int, cols: int, row0: int = 0) -> torch.Tensor:
    """Linear weight (out, in) -> its transpose (in, out) in float16, placed at row ``row0``
    of a zero (rows, cols) matrix."""
    out = torch.zeros(rows, cols, device=w.device, dtype=torch.float16)
    out[row0:row0 + w.shape[1], :w.shape[0]] = w.t().to(torch.float16)
    return out


def _pad(b: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, device=b.device, dtype=torch.float32)
    out[:b.shape[0]] = b.float()
    return out


@contextmanager
def _mma_v2_only(on: bool):
    """Compile Triton dots as Ampere-style mma (``DISABLE_MMA_V3``, read when a kernel is
    compiled and part of Triton's cache key) rather than Hopper's wgmma, whose code for
    kernels with several small dots is wrong in recent Triton releases (triton-lang/triton
    issues 10486, 11366: illegal addresses; seen here on the H200 at 128 points a program)."""
    old = os.environ.get("DISABLE_MMA_V3")
    if on:
        os.environ["DISABLE_MMA_V3"] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop("DISABLE_MMA_V3", None)
            else:
                os.environ["DISABLE_MMA_V3"] = old


class FieldKernel:
    """A fast field's weights laid out for :func:`field_points` (transposed, float16,
    padded), made anew for each render call (a cache keyed on the parameters' version
    counters went stale: fused Adam updates parameters without bumping them).
    ``half_table``: the hash table as float16 pairs (one 32-bit load per corner)."""

    # bench/bench_march_kernel.py on the H200 (ms per 512x512 frame of 10.4 M samples): 128
    # points a program, 4 warps, mma 11.1; 64 points 24.9; float16 table 10.3 (not worth its
    # rounding); wgmma: 25.0 at 64 points, an illegal address at 128
    half_table = False
    block, warps = 128, 4
    wgmma = False  # Hopper's wgmma for the dots (see _mma_v2_only)

    def __init__(self, field):
        H, CH, G = field.density_hidden.out_features, field.color_hidden.out_features, field.geo_features
        Dh = field.grid.out_dim
        self.field, self.H, self.CH = field, H, CH
        self.w1 = field.density_in.weight[:, :Dh].t().float().contiguous()  # (L F, H) float32
        self.w2, self.b2 = _pad_t(field.density_hidden.weight, H, H), _pad(field.density_hidden.bias, H)
        self.w3, self.b3 = _pad_t(field.density_out.weight, H, OUT_PAD), _pad(field.density_out.bias, OUT_PAD)
        # colour input: geo features are columns 1..G of the density output (column 0 is the density)
        self.w4 = _pad_t(field.color_in.weight[:, :G], OUT_PAD, CH, row0=1)
        self.w5, self.b5 = _pad_t(field.color_hidden.weight, CH, CH), _pad(field.color_hidden.bias, CH)
        self.w6, self.b6 = _pad_t(field.color_out.weight, CH, OUT_PAD), _pad(field.color_out.bias, OUT_PAD)
        table = field.grid.table.detach()
        self.half, self.wgmma = self.half_table, self.wgmma
        self.table = (table.half().contiguous().view(torch.int32)[:, 0] if self.half else table.contiguous())

    def ray_tables(self, dirs: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-ray codes of the first density layer (R, H) or (H,) and of the first colour
        layer (R, CH), float32 contiguous."""
        codes = self.field.ray_codes(cond, latent).float().contiguous()
        return codes, self.field.dir_codes(dirs).float().contiguous()

    def __call__(self, ray: torch.Tensor, t: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                 codes: torch.Tensor, dir_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (P,) of rays ``ray`` (int) at ``t`` -> density (P,), rgb (P, 3) float32
        (:func:`field_points`)."""
        P = ray.shape[0]
        sigma = torch.empty(P, device=t.device)
        rgb = torch.empty(P, 3, device=t.device)
        if P == 0:
            return sigma, rgb
        with _mma_v2_only(not self.wgmma):
            self._launch(ray, t, origins, dirs, codes, dir_codes, sigma, rgb)
        return sigma, rgb

    def _launch(self, ray, t, origins, dirs, codes, dir_codes, sigma, rgb) -> None:
        f, grid = self.field, self.field.grid
        P = ray.shape[0]
        _field_kernel[(triton.cdiv(P, self.block),)](
            ray.contiguous(), t.float().contiguous(), origins, dirs, f.box_min, f.box_size, self.table, grid.res,
            grid.mult, grid.level_offset, self.w1,
            codes, self.H if codes.dim() == 2 else 0, self.w2, self.b2, self.w3, self.b3, self.w4, dir_codes,
            self.w5, self.b5, self.w6, self.b6, sigma, rgb, P, float(f.density_bias),
            n_dense=grid.n_dense, L=grid.levels, MASK=grid.table_size - 1, H=self.H, CH=self.CH, OUT=OUT_PAD,
            HALF=self.half, BLOCK=self.block, num_warps=self.warps)


def field_points(field, ray, t, origins, dirs, cond, latent) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast ``field`` at samples (P,) of rays (R, 3) ``ray`` (int, into the rays) at
    ``t``, codes cond (R, C) or (C,), latent (R, L) or (L,) -> density (P,), rgb (P, 3),
    as ``field(origins[ray] + dirs[ray] t, dirs[ray], cond, latent)`` (float16 MLP layers)."""
    kernel = FieldKernel(field)
    o, d = origins.float().contiguous(), dirs.float().contiguous()
    return kernel(ray, t, o, d, *kernel.ray_tables(d, cond, latent))


def composite(active: torch.Tensor, off: torch.Tensor, n: torch.Tensor, sigma: torch.Tensor, rgb: torch.Tensor,
              t: torch.Tensor, T: torch.Tensor, color: torch.Tensor, first_hit: torch.Tensor | None, step: float,
              first_opacity: float, per_round: int, block: int = 128) -> None:
    """One compositing round, in place: live rays ``active`` (A,) (indexes into T (R,),
    color (R, 3) and first_hit (R,)); ray j's samples of the round are sigma, rgb, t
    [off[j] : off[j] + n[j]] (n <= per_round), front to back."""
    A = active.shape[0]
    if A == 0:
        return
    hit = first_hit if first_hit is not None else T
    _composite_kernel[(triton.cdiv(A, block),)](
        active, off, n, sigma, rgb, t, T, color, hit, A, float(step), float(first_opacity),
        HIT=first_hit is not None, K=per_round, BLOCK=block)

