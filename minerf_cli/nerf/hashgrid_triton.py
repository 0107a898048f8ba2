"""A fused Triton kernel for the hash-grid encoding's forward pass (rendering, no gradient).

:class:`~.hashgrid.HashGrid` in plain PyTorch materialises, per point, (L, 8) corner
indexes and weights and (L, 8, F) gathered features through some twenty kernels; on a
512x512 frame of millions of samples that traffic, not the MLP, is most of the render time.
This kernel computes the same features in one pass: one program per block of points and
level; each point's 8 corners are hashed (or densely indexed) as
:meth:`HashGrid.corner_indices` does, their F features gathered and trilinearly weighted in
registers, and only the (N, L * F) result is written.

Used by :meth:`HashGrid.forward` when the input is on a CUDA device, no gradient is needed,
the table is float32 and Triton imports (the GPU image has it; the CPU wheels do not): the
pure-PyTorch path stays the reference and the CPU path. ``available()`` says whether it can
run; ``MINERF_TRITON=0`` turns it off. If its first run in a process fails (Triton cannot
compile for this GPU, say), :meth:`HashGrid.forward` turns it off (``disabled_reason``) and
goes on in PyTorch; this also turns off :mod:`.march_triton`.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Callable, TypeVar

import torch

try:  # Triton ships with CUDA builds of torch only
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - any import failure means: use the PyTorch path
    triton = None


T = TypeVar("T")
verified = False  # the kernel has run in this process
disabled_reason: str | None = None  # why it was turned off here (its first run failed: HashGrid.forward)


def failure_reason(exc: BaseException) -> str:
    """A kernel's first-run failure in one line, for ``disabled_reason``: "Type: first line"."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def disable(reason: str) -> None:
    """Turn this kernel off for the process, with why (every fused kernel checks :func:`available`)."""
    global disabled_reason
    disabled_reason = reason


def first_use(owner, run: Callable[[], T], on_failure: Callable[[str], None]) -> T | None:
    """Launch a fused kernel through ``run()``. ``owner.verified`` says whether it has run in
    this process: after that, a failure is a real error and propagates. Before it, a failure
    (Triton cannot compile for this GPU, say) goes to ``on_failure(reason)``, which turns
    the kernel off, and None is returned: the caller goes on in PyTorch."""
    if owner.verified:
        return run()
    try:
        out = run()
    except Exception as exc:  # noqa: BLE001 - any failure of an unproven kernel
        on_failure(failure_reason(exc))
        return None
    owner.verified = True
    return out


def on_device(t: torch.Tensor):
    """Triton launches on the current CUDA device: a context that makes it ``t``'s."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def available() -> bool:
    """Whether the fused kernel can run here (Triton, a CUDA device, not disabled)."""
    return (triton is not None and disabled_reason is None and torch.cuda.is_available()
            and os.environ.get("MINERF_TRITON", "1") != "0")


if triton is not None:

    @triton.jit
    def cell(x, res):
        """Coordinate in [0, 1] (clamped), level resolution -> cell origin (int32) and the
        fraction in the cell, as :meth:`HashGrid.cells` (x = 1: last cell, fraction 1)."""
        p = tl.minimum(tl.maximum(x, 0.0), 1.0) * res
        o = tl.minimum(tl.floor(p), res - 1.0)
        return o.to(tl.int32), p - o

    @triton.jit
    def corner(ix, iy, iz, fx, fy, fz, m0, m1, m2, c: tl.constexpr, dense, MASK: tl.constexpr):
        """Corner c = 4 bx + 2 by + bz of cells (ix, iy, iz) with fractions (fx, fy, fz) ->
        its row in the level (dense index or spatial hash, before the level offset) and its
        trilinear weight, as :meth:`HashGrid.corner_indices` and :func:`trilinear_weights`."""
        bx: tl.constexpr = (c >> 2) & 1
        by: tl.constexpr = (c >> 1) & 1
        bz: tl.constexpr = c & 1
        hx = ((ix + bx) * m0) & MASK
        hy = ((iy + by) * m1) & MASK
        hz = ((iz + bz) * m2) & MASK
        idx = tl.where(dense, hx + hy + hz, hx ^ hy ^ hz)
        wx = fx if bx else 1.0 - fx
        wy = fy if by else 1.0 - fy
        wz = fz if bz else 1.0 - fz
        return idx, wx * wy * wz

    @triton.jit
    def _hash_encode_kernel(x_ptr, table_ptr, res_ptr, mult_ptr, offset_ptr, out_ptr, N,
                            n_dense: tl.constexpr, L: tl.constexpr, F: tl.constexpr,
                            MASK: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        lvl = tl.program_id(1)
        rows = pid * BLOCK + tl.arange(0, BLOCK)
        ok = rows < N
        res = tl.load(res_ptr + lvl)
        m0 = tl.load(mult_ptr + lvl * 3 + 0).to(tl.int32)
        m1 = tl.load(mult_ptr + lvl * 3 + 1).to(tl.int32)
        m2 = tl.load(mult_ptr + lvl * 3 + 2).to(tl.int32)
        off = tl.load(offset_ptr + lvl)
        ix, fx = cell(tl.load(x_ptr + rows * 3 + 0, mask=ok, other=0.0), res)
        iy, fy = cell(tl.load(x_ptr + rows * 3 + 1, mask=ok, other=0.0), res)
        iz, fz = cell(tl.load(x_ptr + rows * 3 + 2, mask=ok, other=0.0), res)
        dense = lvl < n_dense
        for f in tl.static_range(F):
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for c in tl.static_range(8):
                idx, w = corner(ix, iy, iz, fx, fy, fz, m0, m1, m2, c, dense, MASK)
                acc += tl.load(table_ptr + (idx + off) * F + f, mask=ok, other=0.0) * w
            tl.store(out_ptr + rows * (L * F) + lvl * F + f, acc, mask=ok)


def hash_encode(grid, x: torch.Tensor, block: int = 256) -> torch.Tensor:
    """x (N, 3) float32 on CUDA in [0, 1]^3 (clamped) -> (N, L * F) float32, the features of
    ``grid`` (a :class:`~.hashgrid.HashGrid`) without gradient."""
    x = x.contiguous().float()
    N = x.shape[0]
    out = torch.empty((N, grid.out_dim), device=x.device, dtype=torch.float32)
    if N == 0:
        return out
    table = grid.table.detach().contiguous()
    with on_device(x):
        _hash_encode_kernel[(triton.cdiv(N, block), grid.levels)](  # (mult: int64, cast in the kernel)
            x, table, grid.res, grid.mult, grid.level_offset, out, N,
            n_dense=grid.n_dense, L=grid.levels, F=grid.features, MASK=grid.table_size - 1, BLOCK=block)
    return out
