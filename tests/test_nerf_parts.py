"""MI-NeRF model parts (minerf_cli.nerf): hand-computed rendering, the conditioning
modules against their expanded forms, samplers, rays and encodings. CPU, fast."""

from __future__ import annotations

import math

import pytest
import torch

from minerf_cli.nerf import conditioning as cond
from minerf_cli.nerf import encoding, field, rays, render, samplers

D = 53  # ICT expression dim = identity-code dim
# torch.testing imports its helpers lazily on first use (~0.7 s): pay that at collection
# so that the per-test durations measure the tests.
torch.testing.assert_close(torch.zeros(1), torch.zeros(1))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- volume rendering


def test_weights_of_a_three_sample_ray_by_hand():
    # t = 0, 1, 2: deltas 1, 1, (1e10). densities ln2, ln4, ln8:
    #   alpha_0 = 1 - e^{-ln2} = 1/2, alpha_1 = 1 - 1/4 = 3/4, alpha_2 = 1 - e^{-1e10 ln8} = 1
    #   T_0 = 1, T_1 = 1/2, T_2 = 1/2 * 1/4 = 1/8
    #   w = (1/2, 1/2 * 3/4, 1/8 * 1) = (0.5, 0.375, 0.125), sum 1
    t = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    sigma = torch.tensor([[math.log(2), math.log(4), math.log(8)]], dtype=torch.float64)
    rgb = torch.eye(3, dtype=torch.float64)[None]  # red, green, blue samples
    out = render.volume_render(sigma, rgb, t)
    torch.testing.assert_close(out.weights, torch.tensor([[0.5, 0.375, 0.125]], dtype=torch.float64))
    torch.testing.assert_close(out.rgb, torch.tensor([[0.5, 0.375, 0.125]], dtype=torch.float64))
    # depth = 0.5*0 + 0.375*1 + 0.125*2 = 0.625; opacity = 1
    torch.testing.assert_close(out.depth, torch.tensor([0.625], dtype=torch.float64))
    torch.testing.assert_close(out.opacity, torch.tensor([1.0], dtype=torch.float64))
    # the pieces on their own
    a = render.alphas_from_densities(sigma, render.deltas_from_t(t))
    torch.testing.assert_close(a, torch.tensor([[0.5, 0.75, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(render.transmittance(a), torch.tensor([[1.0, 0.5, 0.125]], dtype=torch.float64))
    tau = sigma * render.deltas_from_t(t)  # the sum form volume_render uses gives the same T
    torch.testing.assert_close(render.transmittance_from_depths(tau), torch.tensor([[1.0, 0.5, 0.125]], dtype=torch.float64))


def test_last_sample_takes_the_background_colour_and_the_remaining_transmittance():
    # densities ln2, ln4, 0 (the field says "empty" at the last sample): without the rule
    # the last weight is 0 and opacity 7/8; with it, alpha_last = 1, w_last = T_2 = 1/8 and
    # the last sample's predicted colour (white) is replaced by the background (blue).
    t = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    sigma = torch.tensor([[math.log(2), math.log(4), 0.0]], dtype=torch.float64)
    rgb = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 1.0]]], dtype=torch.float64)
    plain = render.volume_render(sigma, rgb, t)
    torch.testing.assert_close(plain.weights, torch.tensor([[0.5, 0.375, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(plain.opacity, torch.tensor([0.875], dtype=torch.float64))
    bg = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    out = render.volume_render(sigma, rgb, t, background=bg)
    torch.testing.assert_close(out.weights, torch.tensor([[0.5, 0.375, 0.125]], dtype=torch.float64))
    torch.testing.assert_close(out.rgb, torch.tensor([[0.5, 0.375, 0.125]], dtype=torch.float64))
    torch.testing.assert_close(out.opacity, torch.tensor([0.875], dtype=torch.float64))
    # an empty ray shows exactly the background, whatever the last predicted colour
    empty = render.volume_render(torch.zeros(2, 5), torch.rand(2, 5, 3), torch.linspace(1, 2, 5).expand(2, 5),
                                 background=torch.tensor([[0.2, 0.3, 0.4], [0.9, 0.8, 0.7]]))
    torch.testing.assert_close(empty.rgb, torch.tensor([[0.2, 0.3, 0.4], [0.9, 0.8, 0.7]]))
    assert torch.all(empty.opacity == 0)


def test_loss_terms():
    rgb, gt = torch.full((4, 3), 0.5), torch.zeros(4, 3)
    latent, identity = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    out = render.minerf_loss(rgb, gt, latent, identity)
    # 0.25 + 0.01 * 5 + 1e-4 * 2
    torch.testing.assert_close(out["total"], torch.tensor(0.25 + 0.05 + 2e-4))
    out2 = render.minerf_loss(rgb, gt, latent, identity, rgb_coarse=gt)
    torch.testing.assert_close(out2["photometric"], torch.tensor(0.25))


def test_mask_loss_by_hand_and_its_gradient():
    opacity = torch.tensor([0.2, 0.9, 0.0, 0.5], requires_grad=True)
    head = torch.tensor([False, True, True, False])
    loss = render.mask_loss(opacity, head)
    # |0.2 - 0| + |0.9 - 1| + |0 - 1| + |0.5 - 0| = 1.8, over 4 rays
    torch.testing.assert_close(loss, torch.tensor(0.45))
    loss.backward()  # lowers the opacity outside the head, raises it inside
    torch.testing.assert_close(opacity.grad, torch.tensor([0.25, -0.25, -0.25, 0.25]))


def test_distortion_loss_by_hand():
    t = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    spread = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    # ray 1: s = 0, 1; 2 * 0.5 * 0.5 * |0 - 1| + (0.25 * 1 + 0.25 * 0) / 3 = 0.5 + 1/12
    # ray 2: all the weight on one sample: 0 + (1 * 1) / 3
    expect = ((0.5 + 1 / 12) + 1 / 3) / 2
    torch.testing.assert_close(render.distortion_loss(spread, t), torch.tensor(expect))
    # the same weight in one place costs less than spread out
    assert render.distortion_loss(torch.tensor([[0.0, 1.0]]), t[:1]) < render.distortion_loss(spread[:1], t[:1])


# ---------------------------------------------------------------- conditioning


def test_multiplicative_module_equals_its_expanded_cp_form():
    torch.manual_seed(0)
    m = cond.MultiplicativeModule(D, D, D, rank=8).double()
    e, i = torch.randn(5, D, dtype=torch.float64), torch.randn(5, D, dtype=torch.float64)
    U1, U2, C, W2, W3 = m.U1.weight, m.U2.weight, m.C.weight, m.W2.weight, m.W3.weight
    expected = torch.zeros(5, D, dtype=torch.float64)
    for n in range(5):
        a, b = U1 @ e[n], U2 @ i[n]  # (k,)
        for r in range(8):
            expected[n] += C[:, r] * a[r] * b[r]
        expected[n] += W2 @ e[n] + W3 @ i[n]
    torch.testing.assert_close(m(e, i), expected)
    # and the full bilinear tensor of appendix A: W[p,a,b] = sum_r C[p,r] U1[r,a] U2[r,b]
    W = torch.einsum("pr,ra,rb->pab", C, U1, U2)
    torch.testing.assert_close(m(e, i) - e @ W2.T - i @ W3.T, torch.einsum("pab,na,nb->np", W, e, i))


def test_high_degree_module_n2_equals_its_expansion():
    torch.manual_seed(1)
    h = cond.HighDegreeModule(D, D, D, degree=2).double()
    e, i = torch.randn(4, D, dtype=torch.float64), torch.randn(4, D, dtype=torch.float64)
    U11, U21 = h.Ue[0].weight, h.Ue[1].weight
    U12, U22 = h.Ui[0].weight, h.Ui[1].weight
    Cm = h.C.weight
    # appendix A.2, eq. (11)
    expected = ((e @ U21.T) * (e @ U11.T) + (e @ U21.T) * (i @ U12.T) + (i @ U22.T) * (e @ U11.T)
                + (i @ U22.T) * (i @ U12.T) + e @ U11.T + i @ U12.T) @ Cm.T
    torch.testing.assert_close(h(e, i), expected)


def test_high_degree_module_n3_recursion():
    torch.manual_seed(2)
    h = cond.HighDegreeModule(6, 6, 5, degree=3, rank=4).double()
    e, i = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    z = [e @ h.Ue[n].weight.T + i @ h.Ui[n].weight.T for n in range(3)]
    x2 = z[0] + z[1] * z[0]
    x3 = x2 + z[2] * x2
    torch.testing.assert_close(h(e, i), x3 @ h.C.weight.T)


def test_ablation_definitions():
    torch.manual_seed(3)
    e, i = torch.randn(2, 7, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)
    mods = {n: cond.make_conditioning(n, 7, 7).double() for n in ("a1", "a2", "a3", "a4", "a5", "a6", "a7")}
    lin = lambda mod, x: x @ mod.weight.T  # noqa: E731
    m = mods["a1"]
    torch.testing.assert_close(m(e, i), lin(m.W2, e) + lin(m.W3, i))
    m = mods["a2"]
    torch.testing.assert_close(m(e, i), e * i + lin(m.W2, e) + lin(m.W3, i))
    m = mods["a3"]
    torch.testing.assert_close(m(e, i), lin(m.W1, e * i + e + i))
    m = mods["a4"]
    torch.testing.assert_close(m(e, i), lin(m.W1, e * i))
    m = mods["a5"]
    torch.testing.assert_close(m(e, i), lin(m.W2, e) * lin(m.W3, i) + lin(m.W2, e) + lin(m.W3, i))
    m = mods["a6"]
    torch.testing.assert_close(m(e, i), lin(m.W1, e * i) + lin(m.W2, e) + lin(m.W3, i))
    m = mods["a7"]
    expected = torch.stack([torch.stack([e[n] @ m.W[p] @ i[n] for p in range(7)]) for n in range(2)])
    torch.testing.assert_close(m(e, i), expected)
    # parameter counts: d^2 (a3, a4), 2 d^2 (a1, a2, a5), 3 d^2 (a6), d^3 (a7)
    count = {n: sum(p.numel() for p in mod.parameters()) for n, mod in mods.items()}
    assert count == {"a1": 98, "a2": 98, "a3": 49, "a4": 49, "a5": 98, "a6": 147, "a7": 343}


@pytest.mark.parametrize("name", cond.NAMES)
def test_every_conditioning_variant_has_the_documented_shapes(name):
    m = cond.make_conditioning(name, D, D)
    o = 2 * D if name == "baseline" else D
    assert m.out_dim == o
    e, i = torch.rand(6, D), torch.randn(6, D)
    assert m(e, i).shape == (6, o)
    # one identity code broadcast over a batch of expressions, and unbatched inputs
    assert m(e, i[0]).shape == (6, o)
    assert m(e[0], i[0]).shape == (o,)
    out = m(e, i)
    assert torch.isfinite(out).all()


def test_factory_options_and_errors():
    assert cond.make_conditioning("m", D, D).rank == 8
    assert cond.make_conditioning("m", D, D, rank=32).rank == 32
    assert cond.make_conditioning("m", D, D, out_dim=256).out_dim == 256
    assert cond.make_conditioning("h", D, D).degree == 2 and cond.make_conditioning("h4", D, D).degree == 4
    assert cond.make_conditioning("h3", D, D).rank == D  # k = d as in the paper
    assert cond.make_conditioning("a1", 53, 20).out_dim == 53  # A1 works with d_e != d_i
    with pytest.raises(ValueError, match="equal"):
        cond.make_conditioning("a6", 53, 20)
    with pytest.raises(ValueError, match="unknown"):
        cond.make_conditioning("z9", D, D)


def test_identity_and_latent_codes():
    ids = cond.IdentityCodes(3, D)
    assert ids(torch.tensor([0, 2])).shape == (2, D)
    lat = cond.FrameLatentCodes([4, 2], dim=32)
    assert lat.count == 6
    torch.testing.assert_close(lat(torch.tensor(1), torch.tensor(1)), lat.table.weight[5])
    with pytest.raises(IndexError):
        lat(torch.tensor(1), torch.tensor(2))
    before = lat.table.weight.detach().clone()
    v = lat.add_video(3, generator=gen())
    assert v == 2 and lat.count == 9
    torch.testing.assert_close(lat.table.weight[:6].detach(), before)
    torch.testing.assert_close(lat(torch.tensor(2), torch.tensor(0)), lat.table.weight[6])
    assert list(ids.grow(1)) == [3] and ids.count == 4


# ---------------------------------------------------------------- encoding and field


def test_positional_encoding_size_and_layout():
    assert encoding.encoding_dim(3, 10) == 63 and encoding.encoding_dim(3, 4) == 27
    x = torch.tensor([[0.1, -0.2, 0.3]])
    out = encoding.positional_encoding(x, 10)
    assert out.shape == (1, 63)
    torch.testing.assert_close(out[0, :3], x[0])
    torch.testing.assert_close(out[0, 3:6], torch.sin(x[0]))
    torch.testing.assert_close(out[0, 6:9], torch.cos(x[0]))
    torch.testing.assert_close(out[0, -3:], torch.cos(2.0**9 * x[0]))
    assert encoding.positional_encoding(torch.zeros(2, 5, 3), 4).shape == (2, 5, 27)
    assert encoding.PositionalEncoding(3, 4, include_input=False).out_dim == 24


def test_vanilla_field_shapes_and_ranges():
    torch.manual_seed(0)
    f = field.VanillaDynamicField(cond_dim=D, latent_dim=32)
    assert isinstance(f, field.Field)
    widths = [layer.in_features for layer in f.trunk]
    in_dim = 63 + D + 32
    assert widths == [in_dim, 256, 256, 256, 256, 256 + in_dim, 256, 256] and len(f.trunk) == 8
    assert [layer.out_features for layer in f.color_layers] == [128] * 4
    assert f.color_layers[0].in_features == 256 + 27
    x, v = torch.randn(5, 7, 3) * 10, torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    for c, lat in ((torch.randn(D), torch.randn(32)), (torch.randn(5, D), torch.randn(5, 32))):
        density, rgb = f(x, v, c, lat)
        assert density.shape == (5, 7) and rgb.shape == (5, 7, 3)
        assert (density >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()


# ---------------------------------------------------------------- samplers


def test_stratified_samples():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    t = samplers.stratified_samples(near, far, 64, perturb=False)
    torch.testing.assert_close(t[:, 0], near)
    torch.testing.assert_close(t[:, -1], far)
    tp = samplers.stratified_samples(near, far, 64, perturb=True, generator=gen())
    assert tp.shape == (2, 64) and (tp.diff(dim=-1) >= 0).all()
    assert (tp >= near[:, None]).all() and (tp <= far[:, None]).all()


@pytest.mark.parametrize("deterministic", [True, False])
def test_sample_pdf_sorted_in_range_and_concentrated(deterministic):
    bins = torch.linspace(0.0, 10.0, 11).expand(3, 11)
    w = torch.zeros(3, 10)
    w[:, 7] = 1.0  # all mass in [7, 8]
    w[2] = 0.0  # all-zero row: uniform
    s = samplers.sample_pdf(bins, w, 128, deterministic=deterministic, generator=gen(1))
    assert s.shape == (3, 128)
    assert (s.diff(dim=-1) >= 0).all()
    assert (s >= 0).all() and (s <= 10).all()
    inside = ((s >= 7) & (s <= 8)).float().mean(-1)
    assert inside[0] > 0.95 and inside[1] > 0.95
    assert inside[2] < 0.3  # uniform row puts about 1/10 there


def test_importance_samples_union_and_samplers():
    near, far = torch.full((4,), 2.0), torch.full((4,), 6.0)
    coarse = samplers.StratifiedSampler(64, perturb=True, generator=gen(2))
    t = coarse.sample(near, far)
    w = torch.exp(-((t - 4.0) ** 2) / 0.01)  # peak at 4
    fine = samplers.PDFSampler(128, perturb=True, generator=gen(3)).sample(near, far, t, w)
    assert fine.shape == (4, 192) and (fine.diff(dim=-1) >= 0).all()
    new = samplers.importance_samples(t, w, 128, include_coarse=False, generator=gen(3))
    assert ((new - 4.0).abs() < 0.3).float().mean() > 0.9
    with pytest.raises(ValueError):
        samplers.PDFSampler().sample(near, far)


# ---------------------------------------------------------------- rays


def _pose(R, t):
    M = torch.eye(4, dtype=torch.float64)
    M[:3, :3], M[:3, 3] = R, torch.as_tensor(t, dtype=torch.float64)
    return M


def test_principal_point_ray_is_the_optical_axis_in_head_space():
    K = torch.tensor([[500.0, 0, 32.5], [0, 500.0, 16.5], [0, 0, 1]], dtype=torch.float64)
    ij = torch.tensor([16, 32])  # centre (32.5, 16.5) = principal point
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    # head facing the camera 50 cm away: camera at +z of head space, looking along -z
    o, d = rays.head_rays(K, _pose(flip, [0, 0, 50]), ij)
    torch.testing.assert_close(o, torch.tensor([0.0, 0.0, 50.0], dtype=torch.float64))
    torch.testing.assert_close(d, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    # a general pose: origin -R^T t, direction R^T e_z
    from scipy.spatial.transform import Rotation

    R = torch.tensor(Rotation.from_rotvec([0.3, -0.5, 0.2]).as_matrix()) @ flip
    tvec = torch.tensor([3.0, -2.0, 45.0], dtype=torch.float64)
    o, d = rays.head_rays(K, _pose(R, tvec), ij)
    torch.testing.assert_close(o, -R.T @ tvec)
    torch.testing.assert_close(d, R.T @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # points on any ray project back to their pixel centre
    oo, dd = rays.image_rays(K, _pose(R, tvec), 4, 6)
    p = oo + 30.0 * dd
    cam = p @ R.T + tvec
    uv = (cam @ K.T)[..., :2] / (cam @ K.T)[..., 2:]
    i, j = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    torch.testing.assert_close(uv, torch.stack([j + 0.5, i + 0.5], -1).double())


def test_near_far_sphere_and_box():
    o = torch.tensor([[0.0, 0.0, 50.0], [0.0, 100.0, 50.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    near, far, hit = rays.near_far_sphere(o, d, (0, 0, 0), 20.0)
    torch.testing.assert_close(near[0], torch.tensor(30.0))
    torch.testing.assert_close(far[0], torch.tensor(70.0))
    assert hit.tolist() == [True, False] and near[1] == far[1]
    near, far, hit = rays.near_far_box(o, d, field.HEAD_BOX_MIN, field.HEAD_BOX_MAX)
    torch.testing.assert_close(near[0], torch.tensor(50.0 - 16.0))
    torch.testing.assert_close(far[0], torch.tensor(50.0 + 12.5))
    assert hit.tolist() == [True, False] and near[1] == far[1]


def test_sample_pixels_95_percent_inside_the_head_box():
    mask = rays.box_mask(128, 128, (32, 16, 96, 112))  # 64 x 96 pixels inside
    ij = rays.sample_pixels(mask, 2048, 0.95, generator=gen(4))
    assert ij.shape == (2048, 2) and ij.dtype == torch.long
    inside = mask[ij[:, 0], ij[:, 1]]
    assert int(inside.sum()) == round(2048 * 0.95)
    # without replacement while there are enough pixels
    assert len({(a, b) for a, b in ij.tolist()}) == 2048
    # a small box: the inside pixels repeat, the split stays exact
    small = rays.box_mask(128, 128, (0, 0, 10, 10))
    ij = rays.sample_pixels(small, 2048, generator=gen(5))
    assert int(small[ij[:, 0], ij[:, 1]].sum()) == round(2048 * 0.95)
    # head box covering the whole frame
    assert rays.sample_pixels(torch.ones(8, 8, dtype=torch.bool), 10, generator=gen()).shape == (10, 2)


def test_project_box_contains_projected_head():
    K = torch.tensor([[500.0, 0, 256.0], [0, 500.0, 256.0], [0, 0, 1]], dtype=torch.float64)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    rect = rays.project_box(K, _pose(flip, [0, 0, 60]), field.HEAD_BOX_MIN, field.HEAD_BOX_MAX)
    u0, v0, u1, v1 = rect.tolist()
    assert u0 < 256 < u1 and v0 < 256 < v1
    mask = rays.box_mask(512, 512, rect)
    assert mask[256, 256] and not mask[0, 0]


def test_vanilla_field_density_is_alive_at_init():
    """He init keeps the trunk's activations, so the ReLU density is positive somewhere for
    every seed (PyTorch's default init gave a constant, often negative, density: no gradient)."""
    for seed in range(6):
        torch.manual_seed(seed)
        f = field.VanillaDynamicField(53, 32)
        x = (torch.rand(64, 32, 3) - 0.5) * 30
        v = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
        with torch.no_grad():
            density, _ = f(x, v, torch.randn(53) * 0.1, torch.randn(32) * 0.1)
        positive = (density > 0).float().mean().item()
        assert 0.02 < positive, (seed, positive)
        assert density.std() > 1e-3  # varies with the point, not one constant bias
