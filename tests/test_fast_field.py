"""Hash-grid encoding (minerf_cli.nerf.hashgrid) against hand-computed lookups and
interpolation, and the FastField (minerf_cli.nerf.fast_field). CPU, fast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minerf_cli.nerf import field, rays, render
from minerf_cli.nerf.fast_field import FastField, trunc_exp
from minerf_cli.nerf.hashgrid import PRIMES, HashGrid, growth_factor, level_resolutions, spatial_hash

torch.testing.assert_close(torch.zeros(1), torch.zeros(1))  # import torch.testing's helpers now
CORNERS = torch.tensor([[bx, by, bz] for bx in (0, 1) for by in (0, 1) for bz in (0, 1)])  # 4bx+2by+bz


def small_grid() -> HashGrid:
    """Resolutions 1, 2, 4 (b = 2), T = 32: levels 0 (8 rows) and 1 (27) dense, level 2 hashed."""
    return HashGrid(levels=3, features=2, log2_table=5, base_res=1, max_res=4)


# ---------------------------------------------------------------- hash grid


def test_default_levels():
    g = HashGrid()
    assert g.resolutions[0] == 16 and g.resolutions[-1] == 1024 and len(g.resolutions) == 16
    assert g.resolutions == sorted(g.resolutions)
    assert math.isclose(growth_factor(16, 16, 1024), math.exp(math.log(64) / 15))
    # dense while (N + 1)^3 <= 2^19, i.e. N <= 79: 16, 21, 27, 36, 48, 64
    assert g.dense == [True] * 6 + [False] * 10 and g.n_dense == 6
    assert g.sizes[:6] == [(r + 1) ** 3 for r in g.resolutions[:6]] and g.sizes[6:] == [2**19] * 10
    assert g.table.shape == (sum(g.sizes), 2) and g.out_dim == 32
    assert g.table.abs().max() <= 1e-4 and g.table.dtype == torch.float32
    assert level_resolutions(1, 16, 16) == [16]
    assert g(torch.rand(10, 3)).shape == (10, 32) and g(torch.rand(2, 5, 3)).shape == (2, 5, 32)


def _set_dense_table(g: HashGrid) -> None:
    """Row of level l, corner (i, j, k) := (1000 l + i + 10 j + 100 k + i j k, sin(i + 2 j + 3 k + l))."""
    with torch.no_grad():
        for lvl, r in enumerate(g.resolutions[: g.n_dense]):
            for i in range(r + 1):
                for j in range(r + 1):
                    for k in range(r + 1):
                        row = g.offsets[lvl] + i + j * (r + 1) + k * (r + 1) ** 2
                        g.table[row, 0] = 1000 * lvl + i + 10 * j + 100 * k + i * j * k
                        g.table[row, 1] = math.sin(i + 2 * j + 3 * k + lvl)


def _dense_value(lvl: int, i: int, j: int, k: int) -> tuple[float, float]:
    return 1000 * lvl + i + 10 * j + 100 * k + i * j * k, math.sin(i + 2 * j + 3 * k + lvl)


def test_dense_levels_equal_hand_trilinear_interpolation():
    g = small_grid()
    _set_dense_table(g)
    x = torch.cat([torch.rand(20, 3, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0], [0.3, 1.0, 0.75]])])
    out = g(x).view(-1, 3, 2)  # (N, L, F)
    for n, p in enumerate(x.tolist()):
        for lvl in range(2):  # the dense levels
            r = g.resolutions[lvl]
            base = [min(math.floor(c * r), r - 1) for c in p]
            frac = [c * r - b for c, b in zip(p, base)]
            expected = [0.0, 0.0]
            for bx in (0, 1):
                for by in (0, 1):
                    for bz in (0, 1):
                        w = ((frac[0] if bx else 1 - frac[0]) * (frac[1] if by else 1 - frac[1])
                             * (frac[2] if bz else 1 - frac[2]))
                        v = _dense_value(lvl, base[0] + bx, base[1] + by, base[2] + bz)
                        expected = [e + w * vv for e, vv in zip(expected, v)]
            torch.testing.assert_close(out[n, lvl], torch.tensor(expected), rtol=1e-5, atol=1e-4)


def test_grid_vertices_return_the_exact_table_entries():
    g = small_grid()
    _set_dense_table(g)
    for lvl in range(2):
        r = g.resolutions[lvl]
        ijk = torch.stack(torch.meshgrid(*[torch.arange(r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
        out = g(ijk.float() / r).view(-1, 3, 2)[:, lvl]
        expected = torch.tensor([_dense_value(lvl, *c) for c in ijk.tolist()], dtype=torch.float32)
        assert torch.equal(out, expected)


def test_hashed_level_indexes_are_in_range_deterministic_and_match_the_paper_hash():
    g = small_grid()
    assert g.dense == [True, True, False] and g.sizes == [8, 27, 32] and g.offsets == [0, 8, 35]
    x = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    origin, frac = g.cells(x)
    idx = g.corner_indices(origin)  # (N, L, 8)
    assert idx.shape == (200, 3, 8) and idx.dtype == torch.int32
    # every level reads only its own slice of the one table, and the slices partition it
    for lvl in range(3):
        assert (idx[:, lvl] >= g.offsets[lvl]).all() and (idx[:, lvl] < g.offsets[lvl] + g.sizes[lvl]).all()
    assert g.offsets[-1] + g.sizes[-1] == g.table.shape[0]
    # hashed level: (i * 1 xor j * 2654435761 xor k * 805459861) mod T in uint32 arithmetic
    corners = origin[:, 2, None, :] + CORNERS  # (N, 8, 3)
    ref = [[(((i * PRIMES[0]) ^ (j * PRIMES[1]) ^ (k * PRIMES[2])) & 0xFFFFFFFF) % 32 for i, j, k in c]
           for c in corners.tolist()]
    assert (idx[:, 2] - 35).tolist() == ref
    assert torch.equal(idx[:, 2] - 35, spatial_hash(corners, 32).int())
    # deterministic: again, and in a fresh grid
    assert torch.equal(g.corner_indices(g.cells(x)[0]), idx)
    assert torch.equal(small_grid().corner_indices(origin), idx)
    # the hashed level interpolates the rows the hash names
    out = g(x).view(-1, 3, 2)[:, 2]
    w = torch.stack([(1 - frac[:, 2]) * (1 - b) + frac[:, 2] * b for b in CORNERS.float()], 1).prod(-1)
    torch.testing.assert_close(out, (g.table[35 + spatial_hash(corners, 32)] * w[..., None]).sum(1))


def test_default_grid_hashed_indexes_within_table():
    g = HashGrid()
    x = torch.rand(4096, 3, generator=torch.Generator().manual_seed(2))
    x[0] = 1.0  # the far corner of the box
    idx = g.corner_indices(g.cells(x)[0])
    for lvl in range(16):
        rel = idx[:, lvl] - g.offsets[lvl]
        assert rel.min() >= 0 and rel.max() < g.sizes[lvl]
    finest = idx[:, -1] - g.offsets[-1]
    assert finest.unique().numel() > 0.9 * finest.numel()  # the hash spreads the finest level


def test_gradients_reach_only_the_touched_table_entries():
    g = HashGrid()
    x = torch.rand(10, 3, generator=torch.Generator().manual_seed(3))
    up = torch.randn(10, 16, 2, generator=torch.Generator().manual_seed(4))
    (g(x).view(10, 16, 2) * up).sum().backward()
    origin, frac = g.cells(x)
    idx = g.corner_indices(origin).long()  # (N, L, 8)
    w = torch.stack([(1 - frac) * (1 - b) + frac * b for b in CORNERS.float()], 2).prod(-1)  # (N, L, 8)
    rows, inv = idx.flatten().unique(return_inverse=True)  # the touched rows
    expected = torch.zeros(len(rows), 2).index_add_(0, inv, (w[..., None] * up[:, :, None, :]).reshape(-1, 2))
    grad = g.table.grad
    torch.testing.assert_close(grad[rows], expected)
    assert (grad[rows] != 0).any(-1).all()
    assert grad.count_nonzero() == grad[rows].count_nonzero()  # zero everywhere else
    assert len(rows) <= 10 * 16 * 8 and grad.shape[0] > 1000 * len(rows)


# ---------------------------------------------------------------- fast field

C, LAT = 6, 4


def tiny_field(seed: int = 0) -> FastField:
    torch.manual_seed(seed)
    return FastField(C, LAT, levels=8, log2_table=12, max_res=128, hidden=32, color_hidden=32)


def _inputs(R=5, S=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(field.HEAD_BOX_MIN), torch.tensor(field.HEAD_BOX_MAX)
    x = lo + (hi - lo) * torch.rand(R, S, 3, generator=g)
    v = F.normalize(torch.randn(R, 3, generator=g), dim=-1)
    return x, v


def test_trunc_exp_forward_and_clamped_gradient():
    x = torch.tensor([-1.0, 1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([-1.0, 1.0, 15.0])))


def test_fast_field_shapes_ranges_and_the_box_mask():
    f = tiny_field()
    assert isinstance(f, field.Field) and f.cond_dim == C and f.latent_dim == LAT
    x, v = _inputs()
    x[0, :3] = torch.tensor([[0.0, 0.0, 30.0], [-20.0, 0.0, 0.0], [0.0, 18.0, 0.0]])  # outside the box
    for cond, lat in ((torch.randn(C), torch.randn(LAT)), (torch.randn(5, C), torch.randn(5, LAT)),
                      (torch.randn(C), torch.randn(5, LAT))):
        density, rgb = f(x, v, cond, lat)
        assert density.shape == (5, 7) and rgb.shape == (5, 7, 3)
        assert density.dtype == rgb.dtype == torch.float32
        assert (density >= 0).all() and (rgb >= 0).all() and (rgb <= 1).all()
        assert (density[0, :3] == 0).all() and (density[0, 3:] > 0).all() and (density[1:] > 0).all()
    with pytest.raises(ValueError):
        f(x, v, torch.randn(3, C), torch.randn(LAT))
    # parameter groups: the table alone, then every other parameter, once
    groups = f.param_groups()
    assert [gr["name"] for gr in groups] == ["grid", "mlp"]
    assert groups[0]["params"] == [f.grid.table]
    assert sum(len(gr["params"]) for gr in groups) == len(list(f.parameters()))


def test_split_first_layers_equal_the_concatenated_mlp():
    f = tiny_field(1).double()
    x, v = _inputs(4, 3, seed=1)
    cond, lat = torch.randn(4, C, dtype=torch.float64), torch.randn(LAT, dtype=torch.float64)
    density, rgb = f(x.double(), v.double(), cond, lat)
    h = f.grid(f.normalize(x))  # (R, S, L*F)
    inp = torch.cat([h.double(), field.per_sample(cond, 4, 3), field.per_sample(lat, 4, 3)], -1)
    out = f.density_out(torch.relu(f.density_hidden(torch.relu(f.density_in(inp)))))
    torch.testing.assert_close(density, torch.exp(out[..., 0] + f.density_bias))
    d = f.pe_dir(v.double())[:, None, :].expand(4, 3, 27)
    c = torch.cat([out[..., 1:], d], -1)
    c = f.color_out(torch.relu(f.color_hidden(torch.relu(f.color_in(c)))))
    torch.testing.assert_close(rgb, torch.sigmoid(c))


def test_bf16_autocast_keeps_the_grid_in_float32():
    f = tiny_field(2)
    x, v = _inputs(seed=2)
    cond, lat = torch.randn(C), torch.randn(5, LAT)
    d32, rgb32 = f(x, v, cond, lat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert f.grid(f.normalize(x)).dtype == torch.float32
        d16, rgb16 = f(x, v, cond, lat)
        (d16.sum() + rgb16.sum()).backward()
    assert d16.dtype == rgb16.dtype == torch.float32
    torch.testing.assert_close(d16, d32, rtol=0.05, atol=0.05)
    torch.testing.assert_close(rgb16, rgb32, rtol=0.05, atol=0.05)
    assert f.grid.table.grad.dtype == torch.float32 and f.grid.table.grad.abs().sum() > 0


def test_two_optimisation_steps_decrease_the_rendering_loss():
    f = tiny_field(3)
    g = torch.Generator().manual_seed(3)
    o = F.normalize(torch.randn(16, 3, generator=g), dim=-1) * 60.0
    d = F.normalize(torch.randn(16, 3, generator=g) * 3.0 - o, dim=-1)  # roughly at the head
    near, far, hit = rays.near_far_box(o, d, field.HEAD_BOX_MIN, field.HEAD_BOX_MAX)
    assert hit.all()
    t = near[:, None] + (far - near)[:, None] * torch.linspace(0, 1, 24)
    x = o[:, None, :] + t[..., None] * d[:, None, :]
    target = torch.rand(16, 3, generator=g)
    cond, lat = torch.randn(C, generator=g), torch.randn(LAT, generator=g)
    groups = f.param_groups()
    groups[0]["lr"] = 1e-2
    opt = torch.optim.Adam(groups, lr=5e-3)

    def loss() -> torch.Tensor:
        density, rgb = f(x, d, cond, lat)
        return F.mse_loss(render.volume_render(density, rgb, t).rgb, target)

    losses = []
    for _ in range(2):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        losses.append(value.item())
    with torch.no_grad():
        losses.append(loss().item())
    assert losses[2] < losses[1] < losses[0]


def test_cond_attention_gates_the_condition_per_position():
    """cond_attention: the first layer sees sigmoid(A h) * cond in place of cond (by hand)."""
    f = FastField(C, LAT, levels=2, features=2, log2_table=8, base_res=4, max_res=8, hidden=16,
                  geo_features=3, color_hidden=8, cond_attention=True).double()
    x, v = _inputs(4, 3, seed=3)
    cond, lat = torch.randn(4, C, dtype=torch.float64), torch.randn(LAT, dtype=torch.float64)
    density, rgb = f(x.double(), v.double(), cond, lat)
    h = f.grid(f.normalize(x)).double()
    gated = field.per_sample(cond, 4, 3) * torch.sigmoid(f.attention(h))
    inp = torch.cat([h, gated, field.per_sample(lat, 4, 3)], -1)
    out = f.density_out(torch.relu(f.density_hidden(torch.relu(f.density_in(inp)))))
    torch.testing.assert_close(density, torch.exp(out[..., 0] + f.density_bias))
    (density.sum() + rgb.sum()).backward()
    assert f.attention.weight.grad.abs().sum() > 0


def test_a_field_without_latent_codes():
    """latent_dim 0 (train --latent-dim 0): empty latents, same outputs as the split MLP."""
    f = FastField(C, 0, levels=2, features=2, log2_table=8, base_res=4, max_res=8, hidden=16,
                  geo_features=3, color_hidden=8).double()
    x, v = _inputs(4, 3, seed=4)
    cond = torch.randn(4, C, dtype=torch.float64)
    density, rgb = f(x.double(), v.double(), cond, torch.zeros(0, dtype=torch.float64))
    h = f.grid(f.normalize(x)).double()
    inp = torch.cat([h, field.per_sample(cond, 4, 3)], -1)
    out = f.density_out(torch.relu(f.density_hidden(torch.relu(f.density_in(inp)))))
    torch.testing.assert_close(density, torch.exp(out[..., 0] + f.density_bias))
    assert rgb.shape == (4, 3, 3)


def test_a_failing_fused_kernel_falls_back_to_pytorch(monkeypatch):
    """If the fused kernel's first run fails (Triton cannot compile for the GPU), the
    encoding comes from PyTorch and the kernel stays off in this process."""
    from minerf_cli.nerf import hashgrid_triton

    def broken(grid, x):
        raise RuntimeError("PTXAS error: no such GPU")

    grid = HashGrid(levels=4, features=2, log2_table=10, base_res=4, max_res=32)
    x = torch.rand(50, 3)
    with torch.no_grad():
        ref = grid(x)
        monkeypatch.setattr(hashgrid_triton, "verified", False)
        monkeypatch.setattr(hashgrid_triton, "disabled_reason", None)
        monkeypatch.setattr(hashgrid_triton, "hash_encode", broken)
        monkeypatch.setattr(HashGrid, "fused_ok", lambda self, x: hashgrid_triton.disabled_reason is None)
        out = grid(x)
    assert torch.equal(out, ref)
    assert hashgrid_triton.disabled_reason == "RuntimeError: PTXAS error: no such GPU"
    assert not hashgrid_triton.available()
