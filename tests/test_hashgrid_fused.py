"""The fused Triton hash-grid forward against the PyTorch encoding (CUDA machines only;
skipped on CPU-only CI, run on the GPU with `python3 -m pytest tests/test_hashgrid_fused.py`)."""

import pytest
import torch

from minerf_cli.nerf import hashgrid_triton
from minerf_cli.nerf.hashgrid import HashGrid

pytestmark = pytest.mark.skipif(not hashgrid_triton.available(), reason="needs CUDA and Triton")


@pytest.mark.parametrize("log2_table", [12, 19])
def test_fused_forward_matches_pytorch(log2_table):
    torch.manual_seed(0)
    grid = HashGrid(levels=16, features=2, log2_table=log2_table, base_res=16, max_res=1024).cuda()
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)  # large values, so a wrong corner or weight shows
    x = torch.rand(100_003, 3, device="cuda")
    x[:8] = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0.5], [-0.2, 0.3, 1.4]] * 2, dtype=torch.float32)
    with torch.no_grad():
        fused = grid(x)
        assert grid.fused_ok(x)
        grid.use_fused = False
        ref = grid(x)
    assert fused.shape == ref.shape == (100_003, 32)
    # the kernel may contract x * res - floor into one fma: the cell fraction then differs by
    # float rounding of x * res (up to ~1e-4 at 1024 cells), the features by that times the
    # table's slope (values in [-1, 1] here)
    err = (fused - ref).abs()
    assert err.max() < 2e-3 and err.mean() < 1e-5, (err.max(), err.mean())


def test_fused_not_used_with_gradient():
    grid = HashGrid(log2_table=12).cuda()
    x = torch.rand(10, 3, device="cuda")
    assert not grid.fused_ok(x)  # the table wants gradients: the PyTorch path runs
    grid(x).sum().backward()
    assert grid.table.grad is not None and grid.table.grad.abs().sum() > 0
