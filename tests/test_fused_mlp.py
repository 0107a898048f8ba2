"""Fused Linear + ReLU layers (nerf.fused_mlp) and the vanilla field's fused forward: the
same values and gradients as plain PyTorch, with and without padded inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minerf_cli.nerf import fused_mlp
from minerf_cli.nerf.field import VanillaDynamicField
from minerf_cli.nerf.fused_inputs import concat_rows, encode_points
from minerf_cli.nerf.encoding import positional_encoding
from minerf_cli.nerf.fused_mlp import ReluLink, layer_grads, linear, linear_relu, padded_width, relu_bias_grad

cuda = pytest.mark.skipif(not (torch.cuda.is_available() and fused_mlp.triton is not None), reason="needs CUDA and Triton")


def test_padded_width_rounds_up_to_eight():
    assert [padded_width(k) for k in (1, 8, 148, 283, 404)] == [8, 8, 152, 288, 408]


@pytest.mark.parametrize("pad", [0, 5])
def test_linear_relu_matches_relu_of_linear_in_value_and_gradient(pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 11, generator=g, dtype=torch.float64)
    w = torch.randn(7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    xp = torch.cat([x, torch.zeros(40, pad, dtype=torch.float64)], 1).requires_grad_()
    upstream = torch.randn(40, 7, generator=g, dtype=torch.float64)
    y = linear_relu(xp, w, b)
    gx, gw, gb = torch.autograd.grad((y * upstream).sum(), (xp, w, b))
    x_ref = x.clone().requires_grad_()
    y_ref = torch.relu(F.linear(x_ref, w, b))
    rx, rw, rb = torch.autograd.grad((y_ref * upstream).sum(), (x_ref, w, b))
    assert (y_ref > 0).any() and (y_ref == 0).any()  # both sides of the ReLU are exercised
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx[:, :11], rx)
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gb, rb)
    assert gw.shape == w.shape and gb.dtype == b.dtype


def test_layer_gradient_blocks_parse_as_best_blocks_prints_them():
    assert fused_mlp.parse_blocks("64/32/4/3/True") == (64, 32, 4, 3, True)
    assert fused_mlp.parse_blocks("128,32,8,3,0") == (128, 32, 8, 3, False)
    with pytest.raises(ValueError, match="BLOCK_M"):
        fused_mlp.parse_blocks("64/64/8")


def test_linear_relu_refuses_an_input_narrower_than_the_weight():
    with pytest.raises(ValueError, match="linear_relu"):
        linear_relu(torch.zeros(3, 4), torch.zeros(2, 5), torch.zeros(2))


def test_relu_bias_grad_masks_and_sums_columns():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = torch.tensor([[0.5, 0.0], [0.0, 1.0], [2.0, 3.0]])
    gp, gb = relu_bias_grad(g, y)
    assert gp.tolist() == [[1.0, 0.0], [0.0, 4.0], [5.0, 6.0]] and gb.tolist() == [6.0, 10.0]


def test_layer_grads_masks_the_relu_columns_sums_them_and_gives_the_weight_gradient():
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])  # g @ w = [[1, 2, 4], [3, -1, 5]]
    x = torch.tensor([[0.0, 5.0, 0.0], [2.0, 0.0, 0.0]])  # columns 0, 1 a ReLU's output; 2 not
    gx, gb, gw, gs = layer_grads(g, w, x, cols=2)
    assert gx.tolist() == [[0.0, 2.0, 4.0], [3.0, 0.0, 5.0]] and gb.tolist() == [3.0, 2.0]
    assert gw.tolist() == [[6.0, 5.0, 0.0], [-2.0, 10.0, 0.0]] and gs is None  # g^T x
    assert layer_grads(g, w, x, cols=2, input_grad=False)[:2] == (None, None)
    # a one-output head on the same input: u its output's gradient, v its weight
    u, v = torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0, 0.0])
    gx, gb, _, gs = layer_grads(g, w, x, cols=2, side=(u, v))  # g @ w + u v^T = [[2, 3, 4], [2, -2, 5]]
    assert gx.tolist() == [[0.0, 3.0, 4.0], [2.0, 0.0, 5.0]] and gb.tolist() == [2.0, 3.0]
    assert gs.tolist() == [-2.0, 5.0, 0.0]  # u^T x


def test_layer_grads_leaves_out_the_input_gradient_columns_nobody_wants():
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    x = torch.tensor([[0.0, 5.0, 0.0], [2.0, 0.0, 0.0]])
    gx, gb, gw, _ = layer_grads(g, w, x, cols=2, gx_cols=2)  # column 2 (a tail without gradient) left out
    assert gx.tolist() == [[0.0, 2.0], [3.0, 0.0]] and gb.tolist() == [3.0, 2.0]
    assert gw.tolist() == [[6.0, 5.0, 0.0], [-2.0, 10.0, 0.0]]  # the weight gradient keeps every column
    with pytest.raises(ValueError, match="gx_cols"):
        layer_grads(g, w, x, cols=2, gx_cols=1)


def test_concat_rows_repeats_each_tail_row_over_its_rows():
    x = torch.arange(8.0).reshape(4, 2)
    tail = torch.tensor([[10.0], [20.0]])
    assert concat_rows(x, tail, 2).tolist() == [[0, 1, 10], [2, 3, 10], [4, 5, 20], [6, 7, 20]]
    with pytest.raises(ValueError, match="tail rows"):
        concat_rows(x, tail, 3)


def test_encode_points_is_the_padded_positional_encoding():
    x = torch.tensor([[0.5, -1.0, 0.25]], dtype=torch.float64)
    out = encode_points(x, 2, 16, torch.float64)
    assert out.shape == (1, 16) and out[0, 15] == 0
    # NeRF's layout: x, then sin and cos of 2^k x per frequency, each block 3 wide
    assert out[0, :3].tolist() == [0.5, -1.0, 0.25]
    torch.testing.assert_close(out[0, 3:6], torch.sin(x[0]))
    torch.testing.assert_close(out[0, 12:15], torch.cos(2 * x[0]))
    with pytest.raises(ValueError, match="width"):
        encode_points(x, 2, 14, torch.float64)


@pytest.mark.parametrize("tail_grad", [True, False])
def test_a_tail_shared_by_rows_gives_the_gradients_of_the_concatenation(tail_grad):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64, requires_grad=True)
    tail = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=tail_grad)  # one row per 3 rows of x
    w = torch.randn(6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(12, 6, generator=g, dtype=torch.float64)
    wanted = [x, w, b] + ([tail] if tail_grad else [])
    got = torch.autograd.grad((linear_relu(x, w, b, tail=tail, tail_div=3) * upstream).sum(), wanted)
    ref = torch.relu(F.linear(torch.cat([x, tail.repeat_interleave(3, 0)], 1), w, b))
    assert (ref > 0).any() and (ref == 0).any()
    for a, r in zip(got, torch.autograd.grad((ref * upstream).sum(), wanted)):
        torch.testing.assert_close(a, r)
    with pytest.raises(ValueError, match="tail"):
        linear_relu(x, w, b, tail=tail, tail_div=2)


def test_a_linked_output_head_gives_the_plain_gradients():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in [(6, 4), (6,), (3, 6), (3,)]]
    upstream = torch.randn(20, 3, generator=g, dtype=torch.float64)
    link = ReluLink(6)
    out = linear(linear_relu(x, params[0], params[1], link=link), params[2], params[3], after=link)
    ref = F.linear(torch.relu(F.linear(x, params[0], params[1])), params[2], params[3])
    torch.testing.assert_close(out, ref)
    for a, r in zip(torch.autograd.grad((out * upstream).sum(), [x, *params]),
                    torch.autograd.grad((ref * upstream).sum(), [x, *params])):
        torch.testing.assert_close(a, r)
    assert link.bias_grad is None  # the layer took the head's sums
    with pytest.raises(ValueError, match="linear"):
        linear(x, params[2], params[3])


@pytest.mark.parametrize("skip", [False, True])  # True: the link passes through a concatenation
def test_linked_layers_give_the_unlinked_gradients(skip):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 8, generator=g, dtype=torch.float64)
    params = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
              for s in [(6, 8), (6,), (5, 6 + (8 if skip else 0)), (5,), (4, 5), (4,)]]
    upstream = torch.randn(30, 4, generator=g, dtype=torch.float64)

    def run(linked: bool):
        a, b = (ReluLink(6), ReluLink(5)) if linked else (None, None)
        h = linear_relu(x, params[0], params[1], link=a)
        h = linear_relu(torch.cat([h, x], 1) if skip else h, params[2], params[3], after=a, link=b)
        h = linear_relu(h, params[4], params[5], after=b)
        return torch.autograd.grad((h * upstream).sum(), params)

    for linked, plain in zip(run(True), run(False)):
        torch.testing.assert_close(linked, plain)


def test_a_frozen_linked_layer_still_passes_the_masked_gradient_on():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w1, b1 = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    w2, b2 = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    link = ReluLink(6)
    y = linear_relu(linear_relu(x, w1, b1, link=link), w2, b2, after=link)
    ref = torch.relu(F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2))
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0])


def test_a_link_its_consumer_did_not_fill_leaves_the_masking_to_the_layer():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    y = linear_relu(x, w, b, link=ReluLink(4))  # its output goes to a plain layer after all
    got = torch.autograd.grad(y.sum(), (w, b))
    ref = torch.autograd.grad(torch.relu(F.linear(x, w, b)).sum(), (w, b))
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r)


def test_a_backward_kernel_that_fails_first_falls_back_to_pytorch(monkeypatch):
    from minerf_cli.nerf import hashgrid_triton

    monkeypatch.setattr(hashgrid_triton, "disabled_reason", None)
    monkeypatch.setattr(fused_mlp, "verified", False)
    monkeypatch.setattr(fused_mlp, "_kernel_ok", lambda g: hashgrid_triton.disabled_reason is None)

    def broken(g, y):
        raise RuntimeError("ptxas failed\nmore")

    monkeypatch.setattr(fused_mlp, "_launch", broken)
    g, y = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 3.0]])
    gp, gb = relu_bias_grad(g, y)
    assert gp.tolist() == [[0.0, -2.0]] and gb.tolist() == [0.0, -2.0]
    assert hashgrid_triton.disabled_reason == "RuntimeError: ptxas failed"  # every fused kernel is off now
    monkeypatch.setattr(fused_mlp, "verified", True)  # a kernel that ran before: a failure is an error
    monkeypatch.setattr(fused_mlp, "_kernel_ok", lambda g: True)
    with pytest.raises(RuntimeError, match="ptxas"):
        relu_bias_grad(g, y)


def _field():
    torch.manual_seed(0)
    return VanillaDynamicField(5, 3, width=16, depth=4, skips=(1,), color_width=8, color_depth=2,
                               box_min=(-1, -1, -1), box_max=(1, 1, 1), density_activation="softplus").double()


@pytest.mark.parametrize("per_ray", [True, False])  # False: codes shared by all rays (they join the bias)
def test_fused_forward_is_the_plain_forward_with_the_same_gradients(per_ray):
    field = _field()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 6, 3, generator=g, dtype=torch.float64) * 2 - 1
    view = F.normalize(torch.randn(4, 3, generator=g, dtype=torch.float64), dim=-1)
    cond = torch.randn(*((4, 5) if per_ray else (5,)), generator=g, dtype=torch.float64, requires_grad=True)
    lat = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)

    def run(fused: bool):
        field.zero_grad()
        d, rgb = field.forward_fused(x, view, cond, lat, torch.float64) if fused else field(x, view, cond, lat)
        loss = (d * torch.arange(6.0, dtype=torch.float64)).sum() + (rgb ** 2).sum()
        grads = torch.autograd.grad(loss, [cond, lat, *field.parameters()], allow_unused=True)
        return d.detach(), rgb.detach(), grads

    d1, c1, g1 = run(True)
    d0, c0, g0 = run(False)
    assert d1.shape == (4, 6) and c1.shape == (4, 6, 3)
    torch.testing.assert_close(d1, d0, check_dtype=False)  # (the plain forward gives float32 densities)
    torch.testing.assert_close(c1, c0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b)


@cuda
def test_the_triton_backward_kernel_matches_pytorch():
    g = torch.randn(1000, 256, device="cuda", dtype=torch.bfloat16)
    y = torch.relu(torch.randn(1000, 256, device="cuda", dtype=torch.bfloat16))
    gp, gb = relu_bias_grad(g, y)
    ref = g * (y > 0)
    assert torch.equal(gp, ref)
    torch.testing.assert_close(gb, ref.float().sum(0), rtol=1e-4, atol=1e-3)


@cuda
@pytest.mark.parametrize("shape", [(1000, 256, 256, 256, True), (777, 256, 320, 256, True), (300, 128, 136, 128, True),
                                   (500, 256, 64, 0, False)])
def test_the_triton_layer_gradient_kernel_matches_pytorch(shape):
    P, N, K, cols, input_grad = shape
    g = torch.randn(P, N + 64, device="cuda", dtype=torch.bfloat16)[:, :N]
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / 16
    x = torch.relu(torch.randn(P, K, device="cuda", dtype=torch.bfloat16))
    u, v = torch.randn(P, device="cuda", dtype=torch.bfloat16), torch.randn(K, device="cuda")  # a side head
    gx, gb, gw, gs = fused_mlp._launch_layer_grads(g, w, x, cols, input_grad, (u, v))
    torch.testing.assert_close(gw, g.float().t() @ x.float(), rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(gs, u.float() @ x.float(), rtol=1e-3, atol=1e-2)
    if not input_grad:
        assert gx is None and gb is None
        return
    ref = (g.float() @ w.float()) + u.float()[:, None] * v[None, :]
    ref[:, :cols] *= x[:, :cols] > 0
    torch.testing.assert_close(gx.float(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gb, gx[:, :cols].float().sum(0), rtol=1e-4, atol=1e-2)


@cuda
def test_the_field_under_bf16_autocast_runs_the_fused_layers_and_learns():
    torch.manual_seed(0)
    field = VanillaDynamicField(5, 3, density_activation="softplus").cuda()
    x = torch.rand(64, 16, 3, device="cuda") * 20 - 10
    view = F.normalize(torch.randn(64, 3, device="cuda"), dim=-1)
    cond, lat = torch.randn(5, device="cuda"), torch.randn(3, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        d, rgb = field(x, view, cond, lat)
    with torch.no_grad():
        d_ref, rgb_ref = field(x, view, cond, lat)  # float32, plain layers
    torch.testing.assert_close(rgb, rgb_ref, atol=0.03, rtol=0.05)
    torch.testing.assert_close(d, d_ref, atol=0.05 * float(d_ref.abs().max()), rtol=0.1)
    rgb.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in field.trunk.parameters())


@cuda
def test_the_triton_input_kernels_match_pytorch():
    x = torch.rand(1000, 3, device="cuda") * 2.4 - 1.2
    out = encode_points(x, 10, 64, torch.bfloat16)
    ref = F.pad(positional_encoding(x, 10), (0, 1))
    assert out.dtype == torch.bfloat16 and out.shape == (1000, 64)
    torch.testing.assert_close(out.float(), ref, rtol=8e-3, atol=1e-5)
    h = torch.randn(1000, 300, device="cuda", dtype=torch.bfloat16)[:, :256]
    tail = torch.randn(125, 32, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(concat_rows(h, tail, 8), torch.cat([h, tail.repeat_interleave(8, 0)], 1))


@cuda
def test_the_triton_layer_gradient_kernel_leaves_out_unwanted_columns_and_takes_16_outputs():
    P, N, K = 700, 16, 320
    g = torch.randn(P, N, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / 4
    x = torch.relu(torch.randn(P, K, device="cuda", dtype=torch.bfloat16))
    gx, gb, gw, _ = fused_mlp._launch_layer_grads(g, w, x, 256, True, gx_cols=256)
    ref = g.float() @ w.float()[:, :256]
    ref *= x[:, :256] > 0
    assert gx.shape == (P, 256)
    torch.testing.assert_close(gx.float(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, g.float().t() @ x.float(), rtol=1e-3, atol=1e-2)
