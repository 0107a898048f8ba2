"""Linear + ReLU layers of the vanilla field with fewer passes over memory (training on CUDA).

A 256-wide NeRF layer is memory-bound on a modern GPU: the matmul itself is quick, the
passes over the (P, 256) activations around it are not. PyTorch's autocast layer makes
five: the matmul, the ReLU, and in the backward pass ReLU's mask, the bias gradient (a
column sum) and the two matmuls. On an H100 the bias sums and ReLU passes took 8 of the
vanilla step's 26 ms, and layers whose width is not a multiple of 8 (148 inputs, 404 at the
skip, 283 in the colour branch) fell back to slower matmul kernels.

:func:`linear_relu` computes relu(x W^T + b) with

* the bias and ReLU in the matmul's epilogue (cuBLASLt, ``torch._addmm_activation``);
* in the backward pass one kernel (Triton, :func:`relu_bias_grad`) for ReLU's mask and the
  bias gradient together, then the two matmuls (if the kernel fails on its first use, PyTorch
  does it from then on, and the other fused kernels are turned off too, as theirs do);
* inputs whose width the caller padded with zero columns to a multiple of 8: the weight is
  padded to match inside the layer, so the parameters keep their shapes (checkpoints are
  unchanged) and the padded columns get no gradient.

The math is the same as ``torch.relu(F.linear(x, W, b))``; tests compare both. Shapes: P
rows, K inputs (padded: Kp), N outputs.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from . import hashgrid_triton

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - no Triton: the PyTorch backward
    triton = None


verified = False  # the backward kernel has run in this process (a later failure is a real error)


def padded_width(k: int, multiple: int = 8) -> int:
    """k rounded up to ``multiple`` (matmul kernels want aligned widths)."""
    return -(-k // multiple) * multiple


if triton is not None:

    @triton.jit
    def _relu_bias_grad_kernel(g_ptr, y_ptr, gp_ptr, gb_ptr, P, N: tl.constexpr, BLOCK_M: tl.constexpr,
                               BLOCK_N: tl.constexpr):
        """gp = g * (y > 0) for a block of rows; its column sums added to gb (float32)."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        m = (rows[:, None] < P) & (cols[None, :] < N)
        off = rows[:, None] * N + cols[None, :]
        g = tl.load(g_ptr + off, mask=m, other=0.0)
        y = tl.load(y_ptr + off, mask=m, other=0.0)
        gp = tl.where(y > 0, g, tl.zeros_like(g))
        tl.store(gp_ptr + off, gp, mask=m)
        tl.atomic_add(gb_ptr + cols, tl.sum(gp.to(tl.float32), 0), mask=cols < N)


def relu_bias_grad(g: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient through ReLU and the bias: g (P, N) w.r.t. y = relu(z), y (P, N) ->
    (g * (y > 0) (P, N) in g's dtype, its column sums (N,) float32)."""
    if _kernel_ok(g):  # (a first run that fails: PyTorch from now on, for every fused kernel)
        with hashgrid_triton.on_device(g):
            out = hashgrid_triton.first_use(sys.modules[__name__], lambda: _launch(g, y), hashgrid_triton.disable)
        if out is not None:
            return out
    gp = g * (y > 0)
    return gp, gp.float().sum(0)


def _kernel_ok(g: torch.Tensor) -> bool:
    return triton is not None and g.is_cuda and hashgrid_triton.available()


def _launch(g: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g, y = g.contiguous(), y.contiguous()
    P, N = g.shape
    gp = torch.empty_like(g)
    gb = torch.zeros(N, device=g.device, dtype=torch.float32)
    BLOCK_M, BLOCK_N = 128, min(128, triton.next_power_of_2(N))
    _relu_bias_grad_kernel[(triton.cdiv(P, BLOCK_M), triton.cdiv(N, BLOCK_N))](
        g, y, gp, gb, P, N, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
    return gp, gb


class _LinearReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        k = weight.shape[1]
        w = weight.to(x.dtype)
        if x.shape[1] != k:  # zero columns for the caller's padding
            w = F.pad(w, (0, x.shape[1] - k))
        y = torch._addmm_activation(bias.to(x.dtype), x, w.t())
        ctx.save_for_backward(x, w, y)
        ctx.k, ctx.bias_dtype = k, bias.dtype
        return y

    @staticmethod
    def backward(ctx, g):
        x, w, y = ctx.saved_tensors
        gp, gb = relu_bias_grad(g, y)
        gx = gp @ w if ctx.needs_input_grad[0] else None
        gw = (gp.t() @ x)[:, :ctx.k].float() if ctx.needs_input_grad[1] else None
        return gx, gw, gb.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None


def linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(x W^T + b): x (P, Kp) (float16/bfloat16 on CUDA; any float on CPU), weight
    (N, K) with K <= Kp (x's extra columns are zero padding), bias (N,) -> (P, N) in x's dtype.
    Gradients for x, weight (float32 if it is) and bias as ``torch.relu(F.linear(...))``."""
    if x.dim() != 2 or x.shape[1] < weight.shape[1]:
        raise ValueError(f"linear_relu: x must be (P, >= {weight.shape[1]}), got {tuple(x.shape)}")
    return _LinearReLU.apply(x, weight, bias)
