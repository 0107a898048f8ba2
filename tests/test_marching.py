"""Occupancy grid and ray marching (nerf.occupancy, nerf.marching): hand-computed
compositing, empty-space skipping that changes nothing, early termination, grid updates,
and a model trained with a grid rendering through it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minerf_cli.nerf.marching import compact_samples, march_render, occupied_samples
from minerf_cli.nerf.occupancy import OccupancyGrid, dilate, sigma_threshold

BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


class BallField(torch.nn.Module):
    """density ``sigma`` inside a ball of ``radius`` at the origin, 0 outside; colour ``rgb``."""

    def __init__(self, sigma=2.0, radius=0.5, rgb=(0.9, 0.2, 0.1)):
        super().__init__()
        self.sigma, self.radius, self.rgb = sigma, radius, torch.tensor(rgb)
        self.calls = 0

    def forward(self, x, viewdir, cond, latent):
        self.calls += x.shape[0] * x.shape[1]
        inside = x.norm(dim=-1) < self.radius
        density = torch.where(inside, torch.full(inside.shape, self.sigma), torch.zeros(inside.shape))
        return density, self.rgb.expand(*x.shape[:2], 3)

    def density(self, x, cond, latent):
        return self.forward(x[:, None], None, cond, latent)[0][:, 0]


def _rays(n=5):
    """Rays along +z through x = offsets, from z = -3 (unit directions): near/far of the box."""
    xs = torch.linspace(-0.8, 0.8, n)
    o = torch.stack([xs, torch.zeros(n), torch.full((n,), -3.0)], -1)
    d = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3).clone()
    near, far = torch.full((n,), 2.0), torch.full((n,), 4.0)
    return o, d, near, far


def test_sigma_threshold_and_dilate_hand_values():
    assert sigma_threshold(0.01, 0.5) == pytest.approx(-math.log(0.99) / 0.5)
    m = torch.zeros(5, 5, 5, dtype=torch.bool)
    m[2, 2, 2] = True
    d = dilate(m)
    assert d.sum() == 27 and d[1:4, 1:4, 1:4].all() and not d[0].any()


def test_cell_index_hand_values():
    g = OccupancyGrid(*BOX, resolution=4)
    x = torch.tensor([[-1.0, -1.0, -1.0], [0.99, 0.99, 0.99], [0.1, -0.6, 0.6], [1.5, 0.0, 0.0]])
    idx, inside = g.cell_index(x)
    # cells are 0.5 wide: (-0.6 -> 0), (0.1 -> 2), (0.6 -> 3); flat = (ix * 4 + iy) * 4 + iz
    assert idx.tolist()[:3] == [0, 63, (2 * 4 + 0) * 4 + 3]
    assert inside.tolist() == [True, True, True, False]


def test_all_occupied_marching_is_the_uniform_quadrature():
    field = BallField()
    grid = OccupancyGrid(*BOX, resolution=8)  # never updated: all occupied
    o, d, near, far = _rays()
    bg = torch.tensor([0.1, 0.5, 0.3]).expand(5, 3)
    step, n = 0.05, 40  # 2 units of box / 0.05
    rgb, opacity, stats = march_render(field, grid, o, d, near, far, torch.zeros(4), torch.zeros(2), bg, step, n,
                                       per_round=7, min_transmittance=0.0)
    for r in range(5):
        t = near[r] + (torch.arange(n) + 0.5) * step
        x = o[r] + d[r] * t[:, None]
        k_in = int((x.norm(dim=-1) < 0.5).sum())  # samples inside the ball
        T = math.exp(-field.sigma * step * k_in)
        expect = field.rgb * (1 - T) + bg[r] * T
        assert torch.allclose(rgb[r], expect, atol=1e-5), r
        assert opacity[r].item() == pytest.approx(1 - T, abs=1e-6)
    assert stats.candidates == 5 * n and stats.occupied == 5 * n and stats.evaluated == 5 * n


def test_skipping_empty_space_changes_nothing_but_the_work():
    o, d, near, far = _rays(9)
    bg = torch.rand(9, 3)
    args = (torch.zeros(4), torch.zeros(2), bg, 0.05, 40)
    full_field = BallField()
    full, _, _ = march_render(full_field, OccupancyGrid(*BOX, resolution=16), o, d, near, far, *args,
                              min_transmittance=0.0)
    grid = OccupancyGrid(*BOX, resolution=16)
    field = BallField()
    grid.update(field.density, torch.zeros(16**3, 4), torch.zeros(16**3, 2))
    assert 0 < grid.fraction() < 0.5
    field.calls = 0
    skipped, _, stats = march_render(field, grid, o, d, near, far, *args, min_transmittance=0.0)
    assert torch.allclose(skipped, full, atol=1e-6)
    assert stats.evaluated < stats.candidates / 2 and field.calls == stats.evaluated


def test_an_empty_grid_renders_the_background_exactly():
    grid = OccupancyGrid(*BOX, resolution=4)
    grid.occupied.zero_()
    o, d, near, far = _rays()
    bg = torch.rand(5, 3)
    field = BallField()
    rgb, opacity, stats = march_render(field, grid, o, d, near, far, torch.zeros(4), torch.zeros(2), bg, 0.05, 40)
    assert torch.equal(rgb, bg) and torch.equal(opacity, torch.zeros(5))
    assert stats.evaluated == 0 and field.calls == 0


def test_opaque_rays_stop_after_one_round():
    field = BallField(sigma=500.0, radius=0.9)
    o, d, near, far = _rays(3)
    bg = torch.zeros(3, 3)
    grid = OccupancyGrid(*BOX, resolution=16)
    grid.update(field.density, torch.zeros(16**3, 4), torch.zeros(16**3, 2))
    rgb, opacity, stats = march_render(field, grid, o, d, near, far, torch.zeros(4), torch.zeros(2), bg, 0.05, 40,
                                       per_round=8)
    assert torch.allclose(rgb, field.rgb.expand(3, 3), atol=1e-3)
    # the surface lies within 2 cells (5 steps) of a ray's first occupied sample (one cell of dilation)
    ray, _, _, _ = occupied_samples(o, d, near, far, grid, 0.05, 40)
    assert stats.occupied == ray.numel() > 3 * 8
    assert stats.rounds == 1 and stats.evaluated <= 3 * 8


def test_grid_update_decays_and_keeps_the_maximum():
    grid = OccupancyGrid(*BOX, resolution=4, decay=0.5)
    ones = lambda x, c, l: torch.full((x.shape[0],), 10.0)  # noqa: E731
    zeros = lambda x, c, l: torch.zeros(x.shape[0])  # noqa: E731
    codes = (torch.zeros(64, 4), torch.zeros(64, 2))
    grid.update(zeros, *codes)  # the first update replaces the all-occupied start
    assert not grid.occupied.any() and int(grid.updates) == 1
    grid.update(ones, *codes)
    assert torch.allclose(grid.density, torch.full((4, 4, 4), 10.0)) and grid.occupied.all()
    grid.update(zeros, *codes)
    assert torch.allclose(grid.density, torch.full((4, 4, 4), 5.0))


def test_cell_points_lie_in_their_cells():
    grid = OccupancyGrid(*BOX, resolution=4)
    pts = grid.cell_points(torch.Generator().manual_seed(0))
    idx, inside = grid.cell_index(pts)
    assert inside.all() and torch.equal(idx, torch.arange(64))


# -- the model and the training loop ----------------------------------------------------------------

class _Clip:
    """What GridUpdater reads from a clip."""

    def __init__(self, n=6, d=5):
        self.train_idx = np.arange(n - 1)
        self.expression = torch.rand(n, d)


def _tiny_model(grid=8):
    from minerf_cli.nerf.model import MINeRF, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(field="fast", expr_dim=5, latent_dim=4, frames_per_video=[6, 6], n_coarse=8, n_fine=8,
                      shared_field=True, occupancy_resolution=grid,
                      field_options={"log2_table": 10, "max_res": 32, "levels": 2, "hidden": 8, "color_hidden": 8})
    return MINeRF(cfg)


def test_grid_updater_schedule_and_the_checkpointed_grid():
    from minerf_cli.nerf.model import MINeRF, ModelConfig
    from minerf_cli.training import GridUpdater, TrainConfig

    model = _tiny_model()
    cfg = TrainConfig(grid_warmup=4, grid_every=3)
    up = GridUpdater(model, [(0, _Clip()), (1, _Clip())], cfg, torch.device("cpu"), "fp32")
    assert [s for s in range(12) if up.due(s)] == [4, 7, 10]
    assert not model.uses_marching("auto") and model.uses_marching("grid")  # never updated: auto keeps pdf
    with torch.no_grad():  # a density bump near the origin and nothing elsewhere
        model.fine.density_out.bias[0] = -30.0
    up.update(4)
    assert int(model.occupancy.updates) == 1 and not model.occupancy.occupied.any()
    assert model.uses_marching("auto")
    model.occupancy.occupied[3:5, 3:5, 3:5] = True
    state = model.state_dict()
    assert "occupancy.density" in state and "occupancy.occupied" in state
    again = _tiny_model()
    again.load_state_dict(state)
    assert torch.equal(again.occupancy.occupied, model.occupancy.occupied) and int(again.occupancy.updates) == 1
    # a run config from before the grid existed builds a model without one
    old = ModelConfig.from_dict({k: v for k, v in model.cfg.to_dict().items() if k != "occupancy_resolution"})
    assert MINeRF(old).occupancy is None


def test_marched_and_pdf_rendering_agree_on_empty_space():
    from minerf_cli.nerf.rays import head_rays

    model = _tiny_model().eval()
    K = torch.tensor([[200.0, 0, 64], [0, 200.0, 64], [0, 0, 1]])
    pose = torch.eye(4)
    pose[2, 3] = 60.0
    pose[1, 1] = pose[2, 2] = -1.0  # camera looks at the face (+z towards the viewer)
    i, j = torch.meshgrid(torch.arange(0, 128, 16), torch.arange(0, 128, 16), indexing="ij")
    o, d = head_rays(K, pose, torch.stack([i, j], -1).reshape(-1, 2))
    bg = torch.rand(len(o), 3)
    cond = torch.randn(model.conditioning.out_dim)
    lat = torch.randn(4)
    model.occupancy.updates += 1  # "updated", nothing occupied: marching renders the background only
    model.occupancy.occupied.zero_()
    out = model.render_pixels(o, d, cond, lat, bg, sampler="grid")
    assert torch.equal(out, bg) and model.last_march.evaluated == 0
    with torch.no_grad():  # a field with no density anywhere: the pdf sampler agrees
        model.fine.density_out.bias[0] = -60.0
    pdf = model.render_pixels(o, d, cond, lat, bg, sampler="pdf")
    assert torch.allclose(pdf, bg, atol=1e-5)


def test_compact_samples_packs_each_rays_occupied_samples_to_the_left():
    grid = OccupancyGrid(*BOX, resolution=2)  # cells split at 0 on each axis
    grid.occupied.zero_()
    grid.occupied[1, :, 1] = True  # x > 0 and z > 0
    o = torch.tensor([[0.5, 0.5, -3.0], [-0.5, 0.5, -3.0]])  # the first ray's x is in the occupied half
    d = torch.tensor([[0.0, 0.0, 1.0]] * 2)
    near, far = torch.full((2,), 2.0), torch.full((2,), 4.0)  # z from -1 to 1
    packed, count, cand = compact_samples(o, d, near, far, grid, 0.5, 4)  # t = 2.25, 2.75, 3.25, 3.75
    assert cand.tolist() == [4, 4] and count.tolist() == [2, 0]
    assert packed.shape == (2, 2)
    assert packed[0].tolist() == [3.25, 3.75]  # z = 0.25, 0.75: the occupied half, front to back
    assert torch.isinf(packed[1]).all()


def test_occupied_box_bounds_the_occupied_cells():
    grid = OccupancyGrid(*BOX, resolution=4)  # cells of 0.5
    grid.occupied.zero_()
    assert grid.occupied_box() is None
    grid.occupied[1, 2, 3] = True
    grid.occupied[2, 2, 1] = True
    lo, hi = grid.occupied_box()
    assert lo == pytest.approx([-0.5, 0.0, -0.5]) and hi == pytest.approx([0.5, 0.5, 1.0])


def test_first_hit_is_where_the_opacity_passes_the_threshold():
    field = BallField(sigma=2.0, radius=0.5)
    grid = OccupancyGrid(*BOX, resolution=8)  # never updated: all occupied
    o, d, near, far = _rays(5)
    first = torch.empty(5)
    march_render(field, grid, o, d, near, far, torch.zeros(4), torch.zeros(2), torch.zeros(5, 3), 0.05, 40,
                 per_round=7, first_hit=first, first_opacity=0.05)
    for r in range(5):
        t = near[r] + (torch.arange(40) + 0.5) * 0.05
        inside = ((o[r] + d[r] * t[:, None]).norm(dim=-1) < 0.5).float()
        opacity = 1 - torch.exp(-2.0 * 0.05 * torch.cumsum(inside, 0))  # after each sample
        k = torch.nonzero(opacity > 0.05)
        assert first[r].item() == (pytest.approx(t[k[0, 0]].item()) if len(k) else math.inf), r


def test_preview_pass_renders_only_near_the_surface_and_changes_nothing_there():
    """Two-pass rendering (rendering.render_batch with a preview) against rendering every
    ray, with an opaque ball as the field: same image, far fewer samples."""
    from minerf_cli import rendering

    model = _tiny_model(grid=16).eval()
    model.set_march_steps(256)
    ball = BallField(sigma=500.0, radius=6.0)
    model.fine = ball
    model.occupancy.update(ball.density, torch.zeros(16**3, 4), torch.zeros(16**3, 2))
    K = torch.tensor([[300.0, 0, 32], [0, 300.0, 32], [0, 0, 1]])
    pose = torch.eye(4)
    pose[2, 3] = 60.0
    pose[1, 1] = pose[2, 2] = -1.0
    bg = torch.rand(2, 64, 64, 3)
    cond, lat = torch.zeros(2, model.conditioning.out_dim), torch.zeros(2, 4)
    poses = torch.stack([pose, pose])
    full = rendering.render_batch(model, K, poses, cond, lat, bg, sampler="grid", preview=1)
    n_full = model.last_march.evaluated
    two = rendering.render_batch(model, K, poses, cond, lat, bg, sampler="grid", preview=4)
    n_two = model.last_march.evaluated  # (the full-resolution pass's count)
    on_ball = (full - ball.rgb).abs().amax(-1) < 1e-3
    assert on_ball.sum() > 200 and (~on_ball).sum() > 2000  # the ball covers part of the frame
    assert (two - full).abs().amax() < 1e-3
    assert n_two < 0.7 * n_full  # rays start 1.5 cm before the ball, not at its dilated cells; none around it


def test_set_march_steps_moves_the_step_and_the_grid_threshold():
    model = _tiny_model()
    diag = sum((b - a) ** 2 for a, b in zip(model.cfg.box_min, model.cfg.box_max)) ** 0.5
    model.set_march_steps(64)
    assert model.cfg.march_steps == 64 and model.march_step == pytest.approx(diag / 64)
    assert model.occupancy.sigma_threshold == pytest.approx(sigma_threshold(model.occupancy.alpha_threshold, diag / 64))
    with pytest.raises(ValueError):
        model.set_march_steps(4)


def test_failed_fused_kernels_fall_back_to_pytorch_once(monkeypatch, capsys):
    """If the first fused march of a process fails (e.g. Triton cannot compile for the GPU),
    the same rays are rendered in PyTorch, the kernels are turned off and the commands'
    renderer says so once on stderr."""
    from minerf_cli import rendering
    from minerf_cli.nerf import march_triton

    def broken(*args, **kwargs):
        raise RuntimeError("PTXAS error: no such GPU\nmore detail")

    field = BallField(sigma=2.0, radius=0.5)
    grid = OccupancyGrid(*BOX, resolution=8)
    o, d, near, far = _rays(5)
    args = (field, grid, o, d, near, far, torch.zeros(4), torch.zeros(2), torch.zeros(5, 3), 0.05, 40)
    ref = march_render(*args)[0]
    monkeypatch.setattr(march_triton, "enabled", True)
    monkeypatch.setattr(march_triton, "verified", False)
    monkeypatch.setattr(march_triton, "disabled_reason", None)
    monkeypatch.setattr(march_triton, "supports", lambda f, dev: march_triton.enabled)
    monkeypatch.setattr(march_triton, "compact", broken)
    monkeypatch.setattr(rendering, "_fallback_reported", False)
    rgb = march_render(*args)[0]
    assert torch.equal(rgb, ref)
    assert march_triton.enabled is False and march_triton.disabled_reason == "RuntimeError: PTXAS error: no such GPU"
    rendering.report_kernel_fallback()
    rendering.report_kernel_fallback()
    err = capsys.readouterr().err
    assert err.count("fused rendering kernels failed") == 1 and "PyTorch" in err
