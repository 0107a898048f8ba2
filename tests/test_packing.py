"""Packed training passes (nerf.packing): the field runs only at kept samples, the result
is the full pass with empty space set to zero, gradients agree, capacities adapt."""

from __future__ import annotations

import math

import pytest
import torch

from minerf_cli.nerf.field import VanillaDynamicField
from minerf_cli.nerf.occupancy import OccupancyGrid
from minerf_cli.nerf.packing import PackBudget, kept_samples, pack_indices, packed_field, visible_samples


def _field():
    torch.manual_seed(0)
    return VanillaDynamicField(5, 3, width=16, depth=3, skips=(1,), color_width=8, color_depth=1,
                               box_min=(-1, -1, -1), box_max=(1, 1, 1), density_activation="softplus")


def _inputs(R=6, S=5):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(R, S, 3, generator=g) * 2 - 1, torch.nn.functional.normalize(torch.randn(R, 3, generator=g), dim=-1),
            torch.randn(5, generator=g), torch.randn(R, 3, generator=g))


def test_pack_indices_lists_kept_samples_in_order_padded_with_the_end():
    keep = torch.tensor([[True, False, True], [False, True, False]])
    idx, count = pack_indices(keep, 5)
    assert idx.tolist() == [0, 2, 4, 6, 6] and int(count) == 3
    idx, count = pack_indices(keep, 2)  # too small: the first two, the count tells
    assert idx.tolist() == [0, 2] and int(count) == 3


def test_packed_field_matches_the_full_field_where_kept_and_is_zero_elsewhere():
    field = _field()
    x, d, cond, lat = _inputs()
    keep = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(2)) < 0.5
    full_density, full_rgb = field(x, d, cond, lat)
    density, rgb, count = packed_field(field, x, d, cond, lat, keep, capacity=x.shape[0] * x.shape[1])
    assert int(count) == int(keep.sum()) > 0
    assert torch.allclose(density[keep], full_density[keep], atol=1e-6)
    assert torch.allclose(rgb[keep], full_rgb[keep], atol=1e-6)
    assert (density[~keep] == 0).all() and (rgb[~keep] == 0).all()


def test_packed_gradients_are_the_masked_full_gradients():
    field = _field()
    x, d, cond, lat = _inputs()
    keep = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(3)) < 0.6
    w = torch.randn(x.shape[:2], generator=torch.Generator().manual_seed(4))

    def grads(packed: bool):
        field.zero_grad()
        if packed:
            density, rgb, _ = packed_field(field, x, d, cond, lat, keep, capacity=64)
        else:
            density, rgb = field(x, d, cond, lat)
            density, rgb = density * keep, rgb * keep[..., None]
        ((density * w).sum() + (rgb.sum(-1) * w).sum()).backward()
        return [p.grad.clone() for p in field.parameters()]

    for a, b in zip(grads(True), grads(False)):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_capacity_below_the_count_drops_the_later_samples():
    field = _field()
    x, d, cond, lat = _inputs()
    keep = torch.ones(x.shape[:2], dtype=torch.bool)
    density, _, count = packed_field(field, x, d, cond, lat, keep, capacity=7)
    assert int(count) == 30
    assert (density.reshape(-1)[:7] > 0).all() and (density.reshape(-1)[7:] == 0).all()


def test_kept_samples_leave_out_empty_cells_and_the_background_sample():
    grid = OccupancyGrid((-1, -1, -1), (1, 1, 1), resolution=2)
    grid.occupied.zero_()
    grid.occupied[1] = True  # x > 0
    pts = torch.tensor([[[0.5, 0, 0], [-0.5, 0, 0], [0.5, 0.5, 0.5]], [[0.2, 0, 0], [0.9, 0, 0], [3.0, 0, 0]]])
    assert kept_samples(grid, pts).tolist() == [[True, False, False], [True, True, False]]


def test_pack_budget_sets_capacities_from_the_peak_and_reports_shares():
    budget = PackBudget((1000, 3000), margin=1.5, quantum=100)
    assert budget.capacity == [1000, 3000] and budget.adapt() == {}
    budget.record(torch.tensor([200, 900]))
    budget.record(torch.tensor([300, 600]))
    shares = budget.adapt()
    assert budget.capacity == [500, 1400]  # ceil(300 * 1.5 / 100) * 100, ceil(1350 / 100) * 100
    assert shares["kept"] == pytest.approx(2000 / 8000) and shares["dropped"] == 0
    budget.record(torch.tensor([600, 100]))  # 100 more than the coarse pass had room for
    shares = budget.adapt()
    assert shares["dropped"] == pytest.approx(100 / 4000)
    assert budget.capacity == [900, 200]
    budget.record(torch.tensor([500, 90]))  # less, but not much less: no change (each change is a new graph)
    budget.adapt()
    assert budget.capacity == [900, 200]


def _model(field="vanilla"):
    from minerf_cli.nerf.model import MINeRF, ModelConfig

    torch.manual_seed(0)
    options = ({"width": 16, "depth": 3, "skips": (1,), "color_width": 8, "color_depth": 1,
                "density_activation": "softplus"} if field == "vanilla" else
               {"log2_table": 10, "max_res": 32, "levels": 2, "hidden": 8, "color_hidden": 8})
    cfg = ModelConfig(field=field, expr_dim=5, latent_dim=4, frames_per_video=[4], n_coarse=8, n_fine=8,
                      shared_field=field == "fast", occupancy_resolution=8, field_options=options,
                      smoothing_window=1)
    return MINeRF(cfg)


def _rays(n=16):
    from minerf_cli.nerf.rays import head_rays

    K = torch.tensor([[200.0, 0, 32], [0, 200.0, 32], [0, 0, 1]])
    pose = torch.eye(4)
    pose[2, 3] = 60.0
    pose[1, 1] = pose[2, 2] = -1.0
    ij = torch.stack(torch.meshgrid(torch.arange(8, 56, 12), torch.arange(8, 56, 12), indexing="ij"), -1).reshape(-1, 2)
    return head_rays(K, pose, ij[:n])


def _full_and_packed(model):
    """The same rays rendered with every sample and packed at full capacity (same noise)."""
    o, d = _rays()
    cond, lat, bg = torch.randn(model.conditioning.out_dim), torch.randn(4), torch.rand(len(o), 3)
    torch.manual_seed(5)
    full = model.render_rays(o, d, cond, lat, bg)
    torch.manual_seed(5)
    return full, model.render_rays(o, d, cond, lat, bg, pack=(len(o) * 7, len(o) * 15)), len(o)


@pytest.mark.parametrize("field", ["vanilla", "fast"])
def test_packed_rendering_with_every_cell_occupied_is_the_full_rendering(field):
    full, packed, n = _full_and_packed(_model(field))
    coarse_kept, fine_kept = packed["packed"].tolist()
    assert coarse_kept == n * 7  # all but each ray's background sample
    assert fine_kept <= n * 15  # the fine pass also skips samples hidden behind the coarse pass's opacity
    for key in ("rgb", "opacity"):  # ... which carry at most HIDDEN_T of a ray
        assert torch.allclose(packed[key], full[key], atol=1e-3), key


def test_packed_rendering_of_an_empty_grid_shows_the_background():
    model = _model()
    model.occupancy.occupied.zero_()
    o, d = _rays()
    bg = torch.rand(len(o), 3)
    out = model.render_rays(o, d, torch.randn(model.conditioning.out_dim), torch.randn(4), bg, pack=(64, 64))
    assert out["packed"].tolist() == [0, 0]
    assert torch.allclose(out["rgb"], bg) and torch.allclose(out["rgb_coarse"], bg)
    assert math.isclose(float(out["opacity"].detach().abs().max()), 0.0)


def test_visible_samples_reads_the_coarse_transmittance_at_the_start_of_each_interval():
    t_c = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    w_c = torch.tensor([[0.5, 0.49995, 0.00004, 0.00001]])  # T = 1, 0.5, 5e-5, 1e-5
    t = torch.tensor([[-0.5, 0.0, 0.7, 1.0, 1.99, 2.0, 2.5, 9.0]])
    # intervals: before the first (T_0), 0, 0, 1, 1, 2, 2, 3
    assert visible_samples(t_c, w_c, t).tolist() == [[True, True, True, True, True, False, False, False]]
    assert visible_samples(t_c, w_c, t, eps=1e-6).all()


def test_packed_fine_pass_skips_samples_behind_an_opaque_coarse_surface():
    """A field opaque everywhere: the coarse pass's transmittance collapses after the first
    samples, the packed fine pass runs only those in front and renders the same colour."""
    model = _model()
    with torch.no_grad():
        for f in (model.coarse, model.fine):
            f.density_head.bias.fill_(60.0)  # softplus(59) ~ 59 per cm: opaque within a sample
    full, packed, n = _full_and_packed(model)
    coarse_kept, fine_kept = packed["packed"].tolist()
    assert coarse_kept == n * 7 and fine_kept < n * 15 // 2
    assert torch.allclose(packed["rgb"], full["rgb"], atol=1e-3)
