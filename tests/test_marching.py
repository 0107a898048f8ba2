"""Occupancy grid and ray marching (nerf.occupancy, nerf.marching): hand-computed
compositing, empty-space skipping that changes nothing, early termination, grid updates,
and a model trained with a grid rendering through it."""

from __future__ import annotations

import math

import pytest
import torch

from minerf_cli.nerf.marching import march_render, occupied_samples
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
