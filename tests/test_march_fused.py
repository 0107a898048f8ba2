"""The fused marching kernels (:mod:`minerf_cli.nerf.march_triton`) against the PyTorch path.

They need Triton, which ships with CUDA builds of torch only: on CUDA machines they run on the
GPU (`python3 -m pytest tests/test_march_fused.py`); on a CPU with Triton installed they run
under Triton's interpreter (`TRITON_INTERPRET=1`); elsewhere (CPU-only CI) they are skipped.
"""

import os

import pytest
import torch

from minerf_cli.nerf import march_triton, marching
from minerf_cli.nerf.fast_field import FastField
from minerf_cli.nerf.marching import compact_samples, march_render
from minerf_cli.nerf.occupancy import OccupancyGrid

ON_GPU = march_triton.triton is not None and torch.cuda.is_available()
INTERPRETED = march_triton.triton is not None and os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(not (ON_GPU or INTERPRETED), reason="needs Triton (CUDA, or TRITON_INTERPRET=1)")
DEV = "cuda" if ON_GPU else "cpu"
BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def rays(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, -3.0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    near = torch.full((n,), 1.5) + torch.rand(n, generator=g) * 0.2
    far = near + 2.5
    far[:5] = near[:5]  # rays that miss
    return [v.to(DEV) for v in (o, d, near, far)]


def grid_with_holes(seed: int = 0) -> OccupancyGrid:
    g = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(*BOX, resolution=16).to(DEV)
    grid.occupied.copy_((torch.rand(16, 16, 16, generator=g) < 0.4).to(DEV))
    grid.updates += 1
    return grid


def field_with_structure(seed: int = 0) -> FastField:
    torch.manual_seed(seed)
    f = FastField(cond_dim=6, latent_dim=4, box_min=BOX[0], box_max=BOX[1], log2_table=12).to(DEV)
    with torch.no_grad():  # large enough values that a wrong feature, weight or code shows
        f.grid.table.uniform_(-1.0, 1.0)
        for m in f.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    return f.eval()


def test_compact_matches_pytorch():
    o, d, near, far = rays(300)
    grid = grid_with_holes()
    ref = compact_samples(o, d, near, far, grid, 0.05, 60)
    got = march_triton.compact(o, d, near, far, grid, 0.05, 60)
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])  # counts, candidates
    assert got[0].shape == ref[0].shape and int(ref[1].sum()) > 100
    fin = torch.isfinite(ref[0])
    assert torch.equal(fin, torch.isfinite(got[0]))
    assert torch.allclose(got[0][fin], ref[0][fin], atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_field_points_matches_the_field(shared):
    f = field_with_structure()
    o, d, near, _ = rays(64)
    g = torch.Generator().manual_seed(1)
    ray = torch.randint(0, 64, (500,), generator=g).to(DEV)
    t = (near[ray] + torch.rand(500, generator=g).to(DEV) * 2.5)
    cond = torch.randn(6, device=DEV) if shared else torch.randn(64, 6, device=DEV)
    latent = torch.randn(4, device=DEV) if shared else torch.randn(64, 4, device=DEV)
    with torch.no_grad():
        sigma, rgb = march_triton.field_points(f, ray, t, o, d, cond, latent)
        f.grid.use_fused = False
        x = o[ray] + d[ray] * t[:, None]
        pick = (lambda c: c) if shared else (lambda c: c[ray])
        ref_sigma, ref_rgb = f(x[:, None], d[ray], pick(cond), pick(latent))
    ref_sigma, ref_rgb = ref_sigma[:, 0], ref_rgb[:, 0]
    assert (ref_sigma == 0).any() and (ref_sigma > 0).sum() > 100  # points outside the box and inside
    assert torch.equal(sigma == 0, ref_sigma == 0)
    # float16 layers: a relative error of the raw density of ~1e-3 (exp of it)
    assert torch.allclose(sigma, ref_sigma, rtol=2e-2, atol=1e-4), (sigma - ref_sigma).abs().max()
    assert (rgb - ref_rgb).abs().max() < 5e-3


def test_fused_march_render_matches_pytorch(monkeypatch):
    f = field_with_structure()
    o, d, near, far = rays(400)
    grid = grid_with_holes()
    cond, latent = torch.randn(400, 6, device=DEV), torch.randn(4, device=DEV)
    bg = torch.rand(400, 3, device=DEV)
    out = {}
    for fused in (True, False):
        monkeypatch.setattr(march_triton, "supports", lambda field, device, fused=fused: fused)
        hit = torch.empty(400, device=DEV)
        rgb, opacity, stats = march_render(f, grid, o, d, near, far, cond, latent, bg, 0.05, 60, per_round=8,
                                           min_transmittance=1e-3, first_hit=hit)
        out[fused] = rgb, opacity, stats, hit
    (rgb, opacity, stats, hit), (rgb0, opacity0, stats0, hit0) = out[True], out[False]
    assert stats0.evaluated > 1000 and stats0.rounds > 1
    assert stats.candidates == stats0.candidates and stats.occupied == stats0.occupied
    assert abs(stats.evaluated - stats0.evaluated) <= 0.01 * stats0.evaluated  # termination may differ by rounding
    assert (rgb - rgb0).abs().max() < 1e-2 and (opacity - opacity0).abs().max() < 1e-2
    both = torch.isfinite(hit0)
    assert both.sum() > 50 and torch.equal(both, torch.isfinite(hit))
    assert (hit[both] - hit0[both]).abs().max() < 0.051  # at most one step apart
    assert marching.march_triton is march_triton


def test_half_table_variant_matches(monkeypatch):
    f = field_with_structure()
    with torch.no_grad():
        f.grid.table.mul_(0.1)  # float16 table: relative error 5e-4 of values about 0.1
    o, d, near, _ = rays(64)
    ray = torch.arange(64, device=DEV).repeat(4)
    t = near[ray] + torch.linspace(0.5, 2.0, 256, device=DEV)
    cond, latent = torch.randn(6, device=DEV), torch.randn(4, device=DEV)
    with torch.no_grad():
        ref = march_triton.field_points(f, ray, t, o, d, cond, latent)
        monkeypatch.setattr(march_triton.FieldKernel, "half_table", True)
        got = march_triton.field_points(f, ray, t, o, d, cond, latent)
    assert march_triton.FieldKernel(f).half
    assert torch.allclose(got[0], ref[0], rtol=2e-2, atol=1e-4) and (got[1] - ref[1]).abs().max() < 5e-3


def test_field_kernel_follows_weight_updates_of_fused_optimisers():
    """Fused Adam changes parameters without bumping their version counters: the kernel's
    weight copies must be made per call, not cached across a training step."""
    f = field_with_structure()
    o, d, near, _ = rays(16)
    ray = torch.arange(16, device=DEV)
    cond, latent = torch.randn(6, device=DEV), torch.randn(4, device=DEV)
    with torch.no_grad():
        before = march_triton.field_points(f, ray, near + 1.0, o, d, cond, latent)[1]
        f.color_out.bias.data += 1.0  # an update no version counter sees
        after = march_triton.field_points(f, ray, near + 1.0, o, d, cond, latent)[1]
    assert (after - before).abs().max() > 0.01
