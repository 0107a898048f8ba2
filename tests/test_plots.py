"""Plots (minerf_cli.plots): metrics CSV reading, training curves, run comparison and the
PCA of identity codes. Headless (Agg), CPU, fast."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from minerf_cli import plots
from minerf_cli.errors import MinerfError, UsageError


def write_csv(path, text):
    path.write_text(text)
    return path


def metrics_csv(path, n=50, test_every=10, seed=0, wall_per_step=2.0):
    """A plausible training log: loss falling, PSNR rising, test_psnr every test_every steps."""
    rng = np.random.default_rng(seed)
    lines = ["step,wall_s,loss,psnr,test_psnr,lr"]
    for k in range(n):
        step = 100 * (k + 1)
        loss = 0.05 * np.exp(-k / 20) * (1 + 0.1 * rng.random())
        psnr = -10 * np.log10(loss)
        test = f"{psnr - 1:.3f}" if k % test_every == test_every - 1 else ""
        lines.append(f"{step},{step * wall_per_step:.1f},{loss:.6f},{psnr:.3f},{test},5e-4")
    return write_csv(path, "\n".join(lines) + "\n")


def assert_png(path, min_w=300, min_h=200):
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(path))
    assert img is not None
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h and w <= 4000 and h <= 4000
    assert img.std() > 5  # something was drawn
    assert not list(path.parent.glob(".*.part*"))  # no temporary left behind
    return img


def test_import_is_cheap():
    code = "import sys, minerf_cli.plots; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- metrics CSV


def test_read_metrics_with_missing_test_cells(tmp_path):
    p = metrics_csv(tmp_path / "m.csv", n=20, test_every=10)
    m = plots.read_metrics(p)
    assert set(m) == {"step", "wall_s", "loss", "psnr", "test_psnr", "lr"}
    assert m["step"].shape == (20,) and m["step"][0] == 100
    assert np.isfinite(m["test_psnr"]).sum() == 2 and np.isnan(m["test_psnr"][0])
    assert np.isfinite(m["psnr"]).all()


def test_read_metrics_errors(tmp_path):
    with pytest.raises(MinerfError, match="not found"):
        plots.read_metrics(tmp_path / "nope.csv")
    with pytest.raises(MinerfError, match="empty"):
        plots.read_metrics(write_csv(tmp_path / "empty.csv", ""))
    with pytest.raises(MinerfError, match="no data rows"):
        plots.read_metrics(write_csv(tmp_path / "header.csv", "step,wall_s,loss,psnr\n"))
    with pytest.raises(MinerfError, match="lacks column.*psnr"):
        plots.read_metrics(write_csv(tmp_path / "nopsnr.csv", "step,loss\n1,0.1\n"), required=("step", "psnr"))
    with pytest.raises(MinerfError, match=r"bad.csv:3: column 'loss': not a number: 'abc'"):
        plots.read_metrics(write_csv(tmp_path / "bad.csv", "step,loss\n1,0.1\n2,abc\n"))
    with pytest.raises(MinerfError, match="step"):
        plots.read_metrics(write_csv(tmp_path / "nostep.csv", "step,loss\n1,0.1\n,0.2\n"))


# ---------------------------------------------------------------- training curves


def test_training_curve_writes_a_png(tmp_path):
    p = metrics_csv(tmp_path / "m.csv")
    out = plots.training_curve(p, tmp_path / "curve.png")
    assert out == tmp_path / "curve.png"
    img = assert_png(out)
    assert img.shape[0] > img.shape[1] * 0.8  # two stacked panels: 800 x 700 px


def test_training_curve_without_test_column_and_with_gaps(tmp_path):
    # no test_psnr column at all; a missing psnr cell; a zero loss (left out of the log axis)
    p = write_csv(tmp_path / "m.csv", "step,wall_s,loss,psnr\n1,0.5,0.1,10\n2,1.0,0.05,\n3,1.5,0,13\n4,2.0,0.02,17\n")
    assert_png(plots.training_curve(p, tmp_path / "a.png"))
    # only test values so far in a column, and a single column
    p2 = write_csv(tmp_path / "m2.csv", "step,wall_s,loss,psnr,test_psnr\n1,0.5,0.1,,\n2,1.0,0.05,,12.5\n")
    assert_png(plots.training_curve(p2, tmp_path / "b.png", columns=("psnr",)), min_h=150)


def test_training_curve_refuses_bad_input_and_existing_output(tmp_path):
    with pytest.raises(MinerfError, match="empty"):
        plots.training_curve(write_csv(tmp_path / "e.csv", ""), tmp_path / "e.png")
    with pytest.raises(MinerfError, match="no data rows"):
        plots.training_curve(write_csv(tmp_path / "h.csv", "step,wall_s,loss,psnr\n"), tmp_path / "h.png")
    with pytest.raises(MinerfError, match="lacks column.*psnr"):
        plots.training_curve(write_csv(tmp_path / "n.csv", "step,loss\n1,0.1\n"), tmp_path / "n.png")
    with pytest.raises(UsageError, match="no columns"):
        plots.training_curve(metrics_csv(tmp_path / "m.csv"), tmp_path / "x.png", columns=())
    assert not list(tmp_path.glob("*.png"))
    out = plots.training_curve(tmp_path / "m.csv", tmp_path / "c.png")
    before = out.read_bytes()
    with pytest.raises(UsageError, match="exists"):
        plots.training_curve(tmp_path / "m.csv", out)
    assert out.read_bytes() == before
    plots.training_curve(tmp_path / "m.csv", out, force=True, title="again")
    assert_png(out)


def test_psnr_vs_time_compares_runs(tmp_path):
    a = metrics_csv(tmp_path / "a.csv", wall_per_step=2.0)
    b = metrics_csv(tmp_path / "b.csv", seed=1, wall_per_step=3.5)
    assert_png(plots.psnr_vs_time({"M, k=8": a, "baseline": b}, tmp_path / "cmp.png"))
    with pytest.raises(UsageError, match="no runs"):
        plots.psnr_vs_time({}, tmp_path / "none.png")
    with pytest.raises(MinerfError, match="lacks column.*wall_s"):
        plots.psnr_vs_time({"x": write_csv(tmp_path / "nw.csv", "step,psnr\n1,10\n")}, tmp_path / "nw.png")


# ---------------------------------------------------------------- PCA of identity codes


def test_pca_of_codes_varying_along_one_axis():
    rng = np.random.default_rng(0)
    d, k = 53, 7
    base = rng.normal(size=d)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    t = rng.normal(size=k) * 3
    proj, explained = plots.pca_2d(base + t[:, None] * direction)
    assert proj.shape == (k, 2) and explained.shape == (2,)
    np.testing.assert_allclose(explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(proj[:, 1], 0.0, atol=1e-12)
    sign = np.sign(direction[np.argmax(np.abs(direction))])  # largest loading made positive
    np.testing.assert_allclose(proj[:, 0], sign * (t - t.mean()), atol=1e-10)


def test_pca_preserves_the_geometry_of_planar_codes_and_is_deterministic():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(20, 2)))[0].T  # two orthonormal rows in R^20
    coords = rng.normal(size=(10, 2)) * [5.0, 1.0]
    codes = coords @ basis + rng.normal(size=20)
    proj, explained = plots.pca_2d(codes)
    np.testing.assert_allclose(explained.sum(), 1.0)
    assert explained[0] > explained[1] > 0
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(proj), dist(coords), atol=1e-9)
    np.testing.assert_allclose(proj.mean(0), 0.0, atol=1e-12)
    proj2, _ = plots.pca_2d(codes * 1.0)
    np.testing.assert_array_equal(proj, proj2)
    # a shift changes nothing; mirrored codes give the mirrored picture (signs fixed by the loadings)
    np.testing.assert_allclose(plots.pca_2d(codes + 3)[0], proj, atol=1e-9)
    np.testing.assert_allclose(plots.pca_2d(-codes)[0], -proj, atol=1e-9)


def test_pca_of_two_codes_and_of_identical_codes():
    proj, explained = plots.pca_2d(np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]]))
    np.testing.assert_allclose(explained, [1.0, 0.0])
    np.testing.assert_allclose(np.abs(proj[:, 0]), [2.5, 2.5])
    assert proj[0, 0] == -proj[1, 0] and (proj[:, 1] == 0).all()
    proj, explained = plots.pca_2d(np.ones((4, 5)))
    assert (proj == 0).all() and (explained == 0).all()
    proj, explained = plots.pca_2d(np.array([[1.0], [2.0], [4.0]]))  # d = 1
    np.testing.assert_allclose(explained, [1.0, 0.0])


def test_pca_rejects_bad_input():
    with pytest.raises(UsageError, match="at least 2 codes, got 1"):
        plots.pca_2d(np.zeros((1, 8)))
    with pytest.raises(UsageError, match=r"\(K, d\)"):
        plots.pca_2d(np.zeros(8))
    with pytest.raises(MinerfError, match="NaN"):
        plots.pca_2d(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_identity_codes_plot(tmp_path):
    import torch

    from minerf_cli.nerf.conditioning import IdentityCodes

    ids = IdentityCodes(12, 53)  # a torch table is accepted as is
    names = [f"video_{k:02d}" for k in range(12)]
    assert_png(plots.identity_codes(names, ids.table.weight, tmp_path / "ids.png"))
    assert_png(plots.identity_codes(["obama", "may"], np.eye(2, 53), tmp_path / "two.png"))  # on a line
    with torch.no_grad():
        proj, _ = plots.pca_2d(ids.table.weight)
    assert proj.shape == (12, 2)


def test_identity_codes_rejects_bad_input(tmp_path):
    with pytest.raises(UsageError, match="at least 2 codes, got 1"):
        plots.identity_codes(["obama"], np.zeros((1, 53)), tmp_path / "one.png")
    with pytest.raises(UsageError, match="3 names for 2 identity codes"):
        plots.identity_codes(["a", "b", "c"], np.zeros((2, 53)), tmp_path / "n.png")
    with pytest.raises(UsageError, match="only 'pca'"):
        plots.identity_codes(["a", "b"], np.eye(2), tmp_path / "t.png", method="tsne")
    assert not list(tmp_path.iterdir())
