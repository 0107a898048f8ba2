"""The vanilla field's layer inputs written in one pass each (training on CUDA).

Two inputs of the vanilla field are built, not computed by a layer: the positional encoding
gamma(x) of every sample (the first layer's input, and again at the skip) and the
concatenations [h; gamma(x)] (the skip layer's input) and [h; gamma(d)] (the first colour
layer's, d the ray's view direction). In PyTorch they cost a dozen passes over memory: sin
and cos in float32, a stack, a concatenation, a cast to bfloat16, the zero padding to a
multiple of 8, and concatenations of unaligned widths (63, 27) that take the copy kernel's
slow path; on an H100 the concatenations alone took 1.3 ms of the 10.4 ms vanilla step.

* :func:`encode_points` writes gamma(x) straight into a zero-padded (P, width) tensor of the
  layer's dtype (one kernel; no gradient with respect to x there);
* :func:`concat_rows` writes [x; tail] with each tail row shared by ``div`` consecutive rows
  (the view direction's encoding is per ray: div = samples per ray), so the per-sample copy
  of the ray's encoding is never made.

Both fall back to PyTorch (CPU, no Triton, a gradient wanted, or a first run that fails, which
turns every fused kernel off as :mod:`.hashgrid_triton` does); the tests compare them.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from . import hashgrid_triton
from .encoding import encoding_dim, positional_encoding

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - no Triton: PyTorch
    triton = None

_encode = SimpleNamespace(verified=False)  # the kernel has run in this process
_concat = SimpleNamespace(verified=False)
TWO_PI_HI = 6.28125  # 2 pi = TWO_PI_HI + TWO_PI_LO, the high part exact in 8 bits (Cody-Waite reduction)
TWO_PI_LO = 2.0 * math.pi - 6.28125


if triton is not None:

    @triton.jit
    def _encode_kernel(x_ptr, out_ptr, P, N_FREQS: tl.constexpr, WIDTH: tl.constexpr, BW: tl.constexpr,
                       BLOCK_M: tl.constexpr, HI: tl.constexpr, LO: tl.constexpr):
        """out[p] = [x, sin(x), cos(x), ..., sin(2^(L-1) x), cos(2^(L-1) x), 0 ...] for a block of
        rows (NeRF's layout, :func:`.encoding.positional_encoding`); the angle is reduced to
        [-pi, pi] first (2^9 x reaches ~600 rad, where fast sine approximations lose digits)."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BW)
        j = tl.maximum(cols - 3, 0)
        freq = j // 6
        part = j % 6  # 0-2 sin of x, y, z; 3-5 cos
        enc = (cols >= 3) & (cols < 3 + 6 * N_FREQS)
        dim = tl.where(cols < 3, cols, tl.where(enc, part % 3, 0))
        rmask = rows < P
        x = tl.load(x_ptr + rows[:, None] * 3 + dim[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
        v = x * tl.exp2(freq.to(tl.float32))[None, :]
        n = tl.floor(v * (1.0 / (HI + LO)) + 0.5)
        r = (v - n * HI) - n * LO
        s = tl.where((part >= 3)[None, :], tl.cos(r), tl.sin(r))
        val = tl.where((cols < 3)[None, :], x, tl.where(enc[None, :], s, 0.0))
        tl.store(out_ptr + rows[:, None] * WIDTH + cols[None, :], val.to(out_ptr.dtype.element_ty),
                 mask=rmask[:, None] & (cols[None, :] < WIDTH))

    @triton.jit
    def _concat_kernel(x_ptr, t_ptr, out_ptr, P, stride_x, div, KX: tl.constexpr, KT: tl.constexpr,
                       BX: tl.constexpr, BT: tl.constexpr, BLOCK_M: tl.constexpr):
        """out[p] = [x[p]; t[p // div]] for a block of rows."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rmask = rows[:, None] < P
        cx = tl.arange(0, BX)
        ct = tl.arange(0, BT)
        out_row = rows[:, None] * (KX + KT)
        mx = rmask & (cx[None, :] < KX)
        tl.store(out_ptr + out_row + cx[None, :], tl.load(x_ptr + rows[:, None] * stride_x + cx[None, :], mask=mx), mask=mx)
        mt = rmask & (ct[None, :] < KT)
        tail = tl.load(t_ptr + (rows // div)[:, None] * KT + ct[None, :], mask=mt)
        tl.store(out_ptr + out_row + KX + ct[None, :], tail, mask=mt)


def _kernel_ok(t: torch.Tensor) -> bool:
    return triton is not None and t.is_cuda and hashgrid_triton.available()


def encode_points(x: torch.Tensor, n_freqs: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """NeRF's positional encoding of points x (P, 3) (already scaled to about [-1, 1]) with
    ``n_freqs`` frequencies, zero-padded to ``width`` >= 3 (1 + 2 n_freqs) columns -> (P, width)
    in ``dtype``. The same values as :func:`.encoding.positional_encoding` (up to rounding)."""
    k = encoding_dim(3, n_freqs)
    if width < k:
        raise ValueError(f"encode_points: width {width} < the encoding's {k} columns")
    if _kernel_ok(x) and not (torch.is_grad_enabled() and x.requires_grad):
        with hashgrid_triton.on_device(x):
            out = hashgrid_triton.first_use(_encode, lambda: _launch_encode(x, n_freqs, width, dtype),
                                            hashgrid_triton.disable)
        if out is not None:
            return out
    return F.pad(positional_encoding(x, n_freqs), (0, width - k)).to(dtype)


def _launch_encode(x: torch.Tensor, n_freqs: int, width: int, dtype: torch.dtype, block: int = 64) -> torch.Tensor:
    x = x.float().contiguous()
    P = x.shape[0]
    out = torch.empty(P, width, device=x.device, dtype=dtype)
    if P:
        _encode_kernel[(triton.cdiv(P, block),)](x, out, P, N_FREQS=n_freqs, WIDTH=width,
                                                 BW=triton.next_power_of_2(width), BLOCK_M=block,
                                                 HI=TWO_PI_HI, LO=TWO_PI_LO)
    return out


def concat_rows(x: torch.Tensor, tail: torch.Tensor, div: int = 1) -> torch.Tensor:
    """[x; tail repeated]: x (P, Kx), tail (P // div, Kt) of x's dtype, each tail row shared by
    ``div`` consecutive rows of x -> (P, Kx + Kt) contiguous. No autograd (the fused layers
    that call it return the gradients themselves)."""
    P, Q = x.shape[0], tail.shape[0]
    if Q * div != P:
        raise ValueError(f"concat_rows: {P} rows against {Q} tail rows x {div}")
    if _kernel_ok(x) and x.stride(1) == 1:
        with hashgrid_triton.on_device(x):
            out = hashgrid_triton.first_use(_concat, lambda: _launch_concat(x, tail, div), hashgrid_triton.disable)
        if out is not None:
            return out
    return torch.cat([x, tail.repeat_interleave(div, 0) if div > 1 else tail], 1)


def _launch_concat(x: torch.Tensor, tail: torch.Tensor, div: int, block: int = 32) -> torch.Tensor:
    tail = tail.to(x.dtype).contiguous()
    (P, KX), KT = x.shape, tail.shape[1]
    out = torch.empty(P, KX + KT, device=x.device, dtype=x.dtype)
    if P:
        _concat_kernel[(triton.cdiv(P, block),)](x, tail, out, P, x.stride(0), div, KX=KX, KT=KT,
                                                 BX=triton.next_power_of_2(KX), BT=triton.next_power_of_2(KT),
                                                 BLOCK_M=block)
    return out
