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
* chained layers (:class:`ReluLink`): when a layer's output feeds only the next fused layer,
  that layer's backward computes its input gradient already through ReLU's mask, with the
  column sums (the previous layer's bias gradient) in the same kernel, and the previous
  layer uses both as they are;
* the backward pass's two matmuls in one kernel (Triton, :func:`layer_grads`): the weight
  gradient g^T x and the input gradient g W read g and x once;
* a one-output linear head on a layer's input (:func:`linear_relu_with_head`, the density head
  beside the first colour layer): its gradient joins the same kernel, so the input's producer
  stays linked.

Per 256-wide layer this leaves five passes over its (P, N) activations (two forward, three
backward) of the nine before; on an H100 the backward of one fine-pass layer went from 0.50
to 0.33 ms (bench/bench_fused_mlp.py).

The math is the same as ``torch.relu(F.linear(x, W, b))``; tests compare both. Shapes: P
rows, K inputs (padded: Kp), N outputs.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from . import hashgrid_triton
from .fused_inputs import concat_rows

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - no Triton: the PyTorch backward
    triton = None


verified = False  # the backward kernel has run in this process (a later failure is a real error)
_layer_grads = SimpleNamespace(verified=False)  # the same for the layer-gradient kernel


def parse_blocks(text: str) -> tuple[int, int, int, int, bool]:
    """'64/64/8/3/True' or '64,64,8,3,1' -> a :data:`LAYER_GRAD_BLOCKS` tuple (BLOCK_M, BLOCK_N,
    warps, stages, LOAD_T), as bench/best_blocks.py prints it."""
    parts = text.replace("/", ",").split(",")
    flags = {"true": True, "1": True, "false": False, "0": False}
    if len(parts) != 5 or parts[4].strip().lower() not in flags:
        raise ValueError(f"layer-gradient blocks must be BLOCK_M/BLOCK_N/warps/stages/LOAD_T, got {text!r}")
    return (*(int(v) for v in parts[:4]), flags[parts[4].strip().lower()])


# BLOCK_M, BLOCK_N, warps, stages, LOAD_T (fastest on an H100, bench_fused_mlp.py); MINERF_LAYER_GRAD_BLOCKS
# sets others (another GPU's best, e.g. 64/32/4/3/True)
LAYER_GRAD_BLOCKS = (64, 64, 8, 3, False)
if os.environ.get("MINERF_LAYER_GRAD_BLOCKS"):
    try:
        LAYER_GRAD_BLOCKS = parse_blocks(os.environ["MINERF_LAYER_GRAD_BLOCKS"])
    except ValueError as exc:
        print(f"minerf: MINERF_LAYER_GRAD_BLOCKS ignored: {exc}", file=sys.stderr)


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

    @triton.jit
    def _grads_columns(g_ptr, w_ptr, x_ptr, gx_ptr, gb_ptr, gw_ptr, u_ptr, v_ptr, gs_ptr, cols, start, end,
                       stride_g, N: tl.constexpr, K: tl.constexpr, COLS: tl.constexpr, GXS: tl.constexpr,
                       INPUT_GRAD: tl.constexpr, SIDE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       LOAD_T: tl.constexpr):
        """:func:`_layer_grads_kernel`'s work on one block of input columns ``cols`` and the rows
        [start, end); the input gradient (row stride GXS) only with INPUT_GRAD."""
        ns = tl.arange(0, N)
        cmask = cols < K
        if INPUT_GRAD:
            w = tl.load(w_ptr + ns[:, None] * K + cols[None, :], mask=cmask[None, :], other=0.0)  # (N, BLOCK_N)
            csum = tl.zeros((BLOCK_N,), dtype=tl.float32)
        if SIDE:
            v = tl.load(v_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            ssum = tl.zeros((BLOCK_N,), dtype=tl.float32)
        acc = tl.zeros((N, BLOCK_N), dtype=tl.float32)
        for r0 in range(start, end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            rmask = rows < end
            a = tl.load(g_ptr + rows[:, None] * stride_g + ns[None, :], mask=rmask[:, None], other=0.0)  # (M, N)
            m = rmask[:, None] & cmask[None, :]
            xv = tl.load(x_ptr + rows[:, None] * K + cols[None, :], mask=m, other=0.0)  # (M, BLOCK_N)
            if LOAD_T:
                at = tl.load(g_ptr + rows[None, :] * stride_g + ns[:, None], mask=rmask[None, :], other=0.0)
                acc = tl.dot(at, xv, acc)
            else:
                acc = tl.dot(tl.trans(a), xv, acc)
            if SIDE:
                u = tl.load(u_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
                ssum += tl.sum(u[:, None] * xv.to(tl.float32), 0)
            if INPUT_GRAD:
                gx = tl.dot(a, w)
                if SIDE:
                    gx += u[:, None] * v[None, :]
                keep = (xv > 0) | (cols[None, :] >= COLS)
                gx = tl.where(keep, gx, tl.zeros_like(gx)).to(gx_ptr.dtype.element_ty)
                tl.store(gx_ptr + rows[:, None] * GXS + cols[None, :], gx, mask=rmask[:, None] & (cols[None, :] < GXS))
                csum += tl.sum(gx.to(tl.float32), 0)
        tl.atomic_add(gw_ptr + ns[:, None] * K + cols[None, :], acc, mask=cmask[None, :])
        if INPUT_GRAD:
            tl.atomic_add(gb_ptr + cols, csum, mask=cols < COLS)
        if SIDE:
            tl.atomic_add(gs_ptr + cols, ssum, mask=cmask)

    @triton.jit
    def _layer_grads_kernel(g_ptr, w_ptr, x_ptr, gx_ptr, gb_ptr, gw_ptr, u_ptr, v_ptr, gs_ptr, P, stride_g,
                            rows_per_split, N: tl.constexpr, K: tl.constexpr, COLS: tl.constexpr,
                            GXS: tl.constexpr, INPUT_GRAD: tl.constexpr, SIDE: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, LOAD_T: tl.constexpr):
        """For columns [n0, n0 + BLOCK_N) of the input and one split of the rows: gw += g^T x
        (atomics, float32); with INPUT_GRAD also, on columns < GXS, gx = (g @ w [+ u v^T]) * (x > 0)
        on columns < COLS (unmasked after them) and its column sums added to gb; with SIDE
        gs += u^T x (a one-output head on the same input: u its gradient, v its weight). g is
        read once (LOAD_T: its transpose for g^T x loaded again from cache instead of permuted)."""
        n0 = tl.program_id(0) * BLOCK_N
        cols = n0 + tl.arange(0, BLOCK_N)
        start = tl.program_id(1) * rows_per_split
        end = tl.minimum(start + rows_per_split, P)
        if INPUT_GRAD:
            if n0 < GXS:
                _grads_columns(g_ptr, w_ptr, x_ptr, gx_ptr, gb_ptr, gw_ptr, u_ptr, v_ptr, gs_ptr, cols, start, end,
                               stride_g, N, K, COLS, GXS, True, SIDE, BLOCK_M, BLOCK_N, LOAD_T)
            else:  # columns whose input gradient nobody wants (an input's tail without gradient)
                _grads_columns(g_ptr, w_ptr, x_ptr, gx_ptr, gb_ptr, gw_ptr, u_ptr, v_ptr, gs_ptr, cols, start, end,
                               stride_g, N, K, COLS, GXS, False, SIDE, BLOCK_M, BLOCK_N, LOAD_T)
        else:
            _grads_columns(g_ptr, w_ptr, x_ptr, gx_ptr, gb_ptr, gw_ptr, u_ptr, v_ptr, gs_ptr, cols, start, end,
                           stride_g, N, K, COLS, GXS, False, SIDE, BLOCK_M, BLOCK_N, LOAD_T)


def relu_bias_grad(g: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient through ReLU and the bias: g (P, N) w.r.t. y = relu(z), y (P, N) ->
    (g * (y > 0) (P, N) in g's dtype, its column sums (N,) float32)."""
    if _kernel_ok(g):  # (a first run that fails: PyTorch from now on, for every fused kernel)
        with hashgrid_triton.on_device(g):
            out = hashgrid_triton.first_use(sys.modules[__name__], lambda: _launch(g, y), hashgrid_triton.disable)
        if out is not None:
            return out
    gp = g * (y > 0)
    return gp, gp.to(_acc(gp)).sum(0)


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


def layer_grads(g: torch.Tensor, w: torch.Tensor, x: torch.Tensor, cols: int, input_grad: bool = True,
                side: tuple[torch.Tensor, torch.Tensor] | None = None, gx_cols: int | None = None):
    """A layer's weight gradient and (``input_grad``) its input gradient through the ReLU
    that made the first ``cols`` columns of its input, from one read of g: g (P, N) gradient
    of its pre-activation, w (N, K) its weight, x (P, K) its input; ``side`` (u (P,), v (K,)):
    a one-output linear head on the same input, u the gradient of its output, v its weight
    (zero-padded to K) -> (gx = (g @ w + u v^T) with columns < cols multiplied by (x > 0)
    (P, K) in g's dtype, the column sums of those columns (cols,) float32, g^T x (N, K)
    float32, u^T x (K,) float32 or None); gx and its sums are None without ``input_grad``.
    ``gx_cols``: only the first gx_cols >= cols columns of gx are wanted (the rest of the
    input needs no gradient): gx is then (P, gx_cols)."""
    gx_cols = w.shape[1] if gx_cols is None else gx_cols
    if not cols <= gx_cols <= w.shape[1]:
        raise ValueError(f"layer_grads: gx_cols {gx_cols} must lie between cols {cols} and {w.shape[1]}")
    if _kernel_ok(g) and g.shape[1] in (16, 32, 64, 128, 256):
        with hashgrid_triton.on_device(g):
            out = hashgrid_triton.first_use(
                _layer_grads, lambda: _launch_layer_grads(g, w, x, cols, input_grad, side, gx_cols=gx_cols),
                hashgrid_triton.disable)
        if out is not None:
            return out
    acc = _acc(g)
    gw = (g.t() @ x).to(acc)
    gs = None if side is None else side[0].to(acc) @ x.to(acc)
    if not input_grad:
        return None, None, gw, gs
    gx = g @ w[:, :gx_cols]
    if side is not None:
        gx += (side[0].to(acc)[:, None] * side[1][:gx_cols].to(acc)[None, :]).to(gx.dtype)
    return (*_mask_and_sum(gx, x, cols), gw, gs)


def _mask_and_sum(gx: torch.Tensor, x: torch.Tensor, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch: gx with columns < cols masked by (x > 0) (in place), and those columns' sums (float32)."""
    gx[:, :cols] *= x[:, :cols] > 0
    return gx, gx[:, :cols].to(_acc(gx)).sum(0)


def _acc(t: torch.Tensor) -> torch.dtype:
    """The dtype sums over rows run in: float32, or t's if wider (the float64 tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def _launch_layer_grads(g: torch.Tensor, w: torch.Tensor, x: torch.Tensor, cols: int, input_grad: bool,
                        side: tuple[torch.Tensor, torch.Tensor] | None = None,
                        blocks: tuple[int, int, int, int, bool] | None = None, gx_cols: int | None = None):
    if g.stride(1) != 1:
        g = g.contiguous()
    w, x = w.contiguous(), x.contiguous()
    (P, N), K = g.shape, w.shape[1]
    gx_cols = K if gx_cols is None else gx_cols
    BLOCK_M, BLOCK_N, warps, stages, load_t = blocks or LAYER_GRAD_BLOCKS
    BLOCK_N = min(BLOCK_N, triton.next_power_of_2(K))
    col_blocks = triton.cdiv(K, BLOCK_N)
    sms = torch.cuda.get_device_properties(g.device).multi_processor_count if g.is_cuda else 4
    splits = max(1, min(triton.cdiv(P, BLOCK_M), 2 * sms // col_blocks))
    rows_per_split = triton.cdiv(triton.cdiv(P, splits), BLOCK_M) * BLOCK_M
    gx = torch.empty(P, gx_cols, device=g.device, dtype=g.dtype) if input_grad else None
    gb = torch.zeros(max(cols, 1), device=g.device, dtype=torch.float32)
    gw = torch.zeros(N, K, device=g.device, dtype=torch.float32)
    if side is not None:
        u, v = side[0].contiguous(), side[1].float().contiguous()
        gs = torch.zeros(K, device=g.device, dtype=torch.float32)
    else:
        u = v = gs = gb
    _layer_grads_kernel[(col_blocks, triton.cdiv(P, rows_per_split))](
        g, w, x, gx if input_grad else g, gb, gw, u, v, gs, P, g.stride(0), rows_per_split, N, K, cols, gx_cols,
        input_grad, side is not None, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, LOAD_T=bool(load_t), num_warps=warps, num_stages=stages)
    gs = gs if side is not None else None
    return (gx, gb[:cols], gw, gs) if input_grad else (None, None, gw, gs)


class ReluLink:
    """Joins two fused layers: layer A's ReLU output is the first ``cols`` columns of layer
    B's input and goes nowhere else. B's backward then computes its input gradient through
    A's ReLU mask (zero where A's output is 0, which is where A's pre-activation is <= 0)
    with the column sums in the same kernel (:func:`layer_grads`) and leaves the sums
    here; A's backward takes the gradient as its masked one and the sums as its bias
    gradient. A link whose consumer did not fill it leaves A to do the masking itself."""

    __slots__ = ("cols", "bias_grad")

    def __init__(self, cols: int):
        self.cols, self.bias_grad = int(cols), None


class _LinearReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, after, link, head_weight, head_bias, tail, tail_div):
        k = weight.shape[1]
        xin = x if tail is None else concat_rows(x, tail.to(x.dtype), tail_div)
        w = weight.to(x.dtype)
        if xin.shape[1] != k:  # zero columns for the caller's padding
            w = F.pad(w, (0, xin.shape[1] - k))
        y = torch._addmm_activation(bias.to(x.dtype), xin, w.t())
        ctx.save_for_backward(xin, w, y, head_weight)
        ctx.k, ctx.kx, ctx.bias_dtype, ctx.after, ctx.link = k, x.shape[1], bias.dtype, after, link
        ctx.tail_div, ctx.tail_dtype = tail_div, None if tail is None else tail.dtype
        if head_weight is None:
            return y
        head = F.linear(xin[:, :head_weight.shape[1]], head_weight.to(x.dtype), head_bias.to(x.dtype))
        return y, head

    @staticmethod
    def backward(ctx, g, g_head=None):
        x, w, y, head_weight = ctx.saved_tensors
        link = ctx.link
        if link is not None and link.bias_grad is not None:  # the next layer masked g and summed it
            gp, gb, link.bias_grad = g, link.bias_grad, None
        else:
            gp, gb = relu_bias_grad(g, y)
        after, kx, gx, gw, gs = ctx.after, ctx.kx, None, None, None
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_tail = ctx.tail_dtype is not None and ctx.needs_input_grad[7]
        cols = after.cols if after is not None else 0
        side = None
        if head_weight is not None:
            v = F.pad(head_weight[0].to(_acc(x)), (0, x.shape[1] - head_weight.shape[1]))
            side = (g_head[:, 0], v)
        if want_x or want_w or want_tail:
            # a tail without gradient: its columns' share of gx is not computed
            gx, gb_after, gw, gs = layer_grads(gp, w, x, cols, want_x or want_tail, side,
                                               gx_cols=x.shape[1] if want_tail else kx)
            gw = gw[:, :ctx.k] if want_w else None
        if after is not None and gx is not None:
            after.bias_grad = gb_after
        g_tail = None
        if want_tail:  # each tail row served tail_div rows of the input
            rest = gx[:, kx:].to(_acc(x))
            g_tail = rest.reshape(-1, ctx.tail_div, rest.shape[1]).sum(1).to(ctx.tail_dtype)
        if gx is not None:
            gx = gx[:, :kx] if want_x else None
        head_grads = (None, None)
        if head_weight is not None:
            if gs is None:
                gs = g_head[:, 0].to(_acc(x)) @ x.to(_acc(x))
            head_grads = (gs[None, :head_weight.shape[1]].to(head_weight.dtype) if ctx.needs_input_grad[5] else None,
                          g_head.to(_acc(x)).sum(0).to(head_weight.dtype) if ctx.needs_input_grad[6] else None)
        return (gx, gw, gb.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None, None, None, *head_grads,
                g_tail, None)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, after):
        w = weight.to(x.dtype)
        ctx.save_for_backward(x, w)
        ctx.after, ctx.bias_dtype = after, bias.dtype
        return F.linear(x, w, bias.to(x.dtype))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        after, (H, K) = ctx.after, w.shape
        gx = gw = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            rows = max(16, H)  # the kernel's dots want 16 or more outputs: zero ones added
            gx, gb_after, gw, _ = layer_grads(F.pad(g, (0, rows - H)), F.pad(w, (0, 0, 0, rows - H)), x,
                                              after.cols if after is not None else 0, ctx.needs_input_grad[0])
            gw = gw[:H] if ctx.needs_input_grad[1] else None
            if after is not None and gx is not None:
                after.bias_grad = gb_after
        gb = g.to(_acc(g)).sum(0).to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def _check(x: torch.Tensor, weight: torch.Tensor, after: ReluLink | None, tail: torch.Tensor | None = None,
           tail_div: int = 1) -> None:
    width = x.shape[1] + (0 if tail is None else tail.shape[1])
    if x.dim() != 2 or width < weight.shape[1]:
        raise ValueError(f"linear_relu: x must be (P, >= {weight.shape[1]}), got {tuple(x.shape)}")
    if after is not None and after.cols > x.shape[1]:
        raise ValueError(f"linear_relu: a link of {after.cols} columns into an input of {x.shape[1]}")
    if tail is not None and (tail.dim() != 2 or tail.shape[0] * tail_div != x.shape[0]):
        raise ValueError(f"linear_relu: a tail of {tuple(tail.shape)} rows x {tail_div} for {x.shape[0]} rows")


def linear_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, after: ReluLink | None = None,
                link: ReluLink | None = None, tail: torch.Tensor | None = None, tail_div: int = 1) -> torch.Tensor:
    """relu(x W^T + b): x (P, Kp) (float16/bfloat16 on CUDA; any float on CPU), weight
    (N, K) with K <= Kp (x's extra columns are zero padding), bias (N,) -> (P, N) in x's dtype.
    Gradients for x, weight (float32 if it is) and bias as ``torch.relu(F.linear(...))``.

    ``link``: a new :class:`ReluLink` (cols = N) when the output will feed only the layer
    that gets it as ``after``; ``after``: the link of the layer whose output x's first
    columns are (the input gradient returned for those columns is then already masked by
    that layer's ReLU, which is all that layer needs of it).

    ``tail`` (P // tail_div, Kt): more input columns after x's, each row shared by
    ``tail_div`` consecutive rows (the layer's input is [x; tail repeated], written in one pass
    by :func:`.fused_inputs.concat_rows`; a skip connection, a per-ray encoding). Without a
    gradient for the tail its columns' share of the input gradient is not computed."""
    _check(x, weight, after, tail, tail_div)
    return _LinearReLU.apply(x, weight, bias, after, link, None, None, tail, tail_div)


def linear_relu_with_head(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, head_weight: torch.Tensor,
                          head_bias: torch.Tensor, after: ReluLink | None = None, link: ReluLink | None = None,
                          tail: torch.Tensor | None = None, tail_div: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`linear_relu` and a one-output linear head on the first columns of the same
    input (the vanilla field's density head beside its first colour layer): head_weight
    (1, H), head_bias (1,) -> (relu(x W^T + b) (P, N), x[:, :H] head_weight^T + head_bias
    (P, 1)), both in x's dtype. The head's share of x's gradient is added inside the
    layer's backward kernel, before the mask of ``after``, so x's producer can be linked."""
    _check(x, weight, after, tail, tail_div)
    if head_weight.shape[0] != 1 or head_weight.shape[1] > x.shape[1]:
        raise ValueError(f"linear_relu_with_head: a head of one output on <= {x.shape[1]} columns, "
                         f"got {tuple(head_weight.shape)}")
    return _LinearReLU.apply(x, weight, bias, after, link, head_weight, head_bias, tail, tail_div)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, after: ReluLink | None = None) -> torch.Tensor:
    """x W^T + b without activation (an output head): x (P, K), weight (H, K), bias (H,) ->
    (P, H) in x's dtype. With ``after`` (the link of the layer that made x) its backward
    masks x's gradient by that layer's ReLU and sums it there, in the same kernel as the
    weight gradient (:func:`layer_grads`, H padded to 16 outputs with zeros)."""
    if x.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"linear: x must be (P, {weight.shape[1]}), got {tuple(x.shape)}")
    if after is not None and after.cols > x.shape[1]:
        raise ValueError(f"linear: a link of {after.cols} columns into an input of {x.shape[1]}")
    return _Linear.apply(x, weight, bias, after)
