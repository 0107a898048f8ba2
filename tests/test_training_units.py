"""Pure functions of the training / rendering / transfer stages, on hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from minerf_cli import runs
from minerf_cli.clips import MOUTH_REGION_LANDMARKS, mouth_boxes, projected_boxes, split_indices
from minerf_cli.errors import FormatError, MinerfError, UsageError
from minerf_cli.nerf.model import MINeRF, ModelConfig
from minerf_cli.nerf.rays import head_rays, near_far_box, project_box, sample_box_pixels
from minerf_cli.rendering import face_box
from minerf_cli.training import TrainConfig, frame_pixels, learning_rate
from minerf_cli.transfer import parse_frames, pingpong


# -- training.learning_rate ---------------------------------------------------------------

def test_learning_rate_decays_geometrically_from_lr_to_lr_final():
    cfg = TrainConfig(steps=1000)
    assert learning_rate(cfg, 0) == pytest.approx(5e-4, rel=1e-12)
    assert learning_rate(cfg, 1000) == pytest.approx(5e-5, rel=1e-12)
    assert learning_rate(cfg, 500) == pytest.approx(math.sqrt(5e-4 * 5e-5), rel=1e-12)  # 1.581e-4
    assert learning_rate(cfg, 250) == pytest.approx(5e-4 * 0.1 ** 0.25, rel=1e-12)
    assert learning_rate(cfg, 5000) == pytest.approx(5e-5, rel=1e-12)  # past the end: stays at lr_final
    values = [learning_rate(cfg, s) for s in range(0, 1001, 50)]
    assert all(a > b for a, b in zip(values, values[1:]))
    custom = TrainConfig(steps=10, lr=1e-2, lr_final=1e-4)
    assert learning_rate(custom, 5) == pytest.approx(1e-3, rel=1e-12)


# -- transfer.pingpong / parse_frames ---------------------------------------------------------

def test_pingpong_walks_back_and_forth():
    assert pingpong(np.arange(9), 3).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
    assert pingpong(np.arange(7), 2).tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert pingpong(np.arange(5), 1).tolist() == [0, 0, 0, 0, 0]
    assert pingpong(np.arange(12), 5).tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
    k = np.arange(1000)
    out = pingpong(k, 7)
    assert out.min() == 0 and out.max() == 6
    assert np.all(np.abs(np.diff(out)) == 1)  # never jumps, never stalls
    assert out.dtype == np.int64


def test_parse_frames_ranges():
    assert parse_frames(None, 10) is None
    assert parse_frames("2:5", 10).tolist() == [2, 3, 4]
    assert parse_frames(":3", 10).tolist() == [0, 1, 2]
    assert parse_frames("4:", 6).tolist() == [4, 5]
    assert parse_frames("0:10", 10).tolist() == list(range(10))
    assert parse_frames("7", 10).tolist() == [7]  # a single frame


@pytest.mark.parametrize("spec", ["5:2", "3:3", "0:11", "10:", "-1:3", "a:b", "1:x", "1.5:3"])
def test_parse_frames_errors(spec):
    with pytest.raises(UsageError) as exc:
        parse_frames(spec, 10)
    assert exc.value.exit_code == 2
    assert spec in str(exc.value)


# -- clips.split_indices ----------------------------------------------------------------------

def test_split_indices_holds_out_the_last_ten_percent_rounded_up():
    train, test = split_indices(15, np.ones(15, bool))  # ceil(1.5) = 2
    assert train.tolist() == list(range(13)) and test.tolist() == [13, 14]
    train, test = split_indices(100, np.ones(100, bool))
    assert train.tolist() == list(range(90)) and test.tolist() == list(range(90, 100))
    train, test = split_indices(30, np.ones(30, bool))
    assert len(test) == 3 and test.tolist() == [27, 28, 29]
    train, test = split_indices(9, np.ones(9, bool))  # ceil(0.9) = 1
    assert train.tolist() == list(range(8)) and test.tolist() == [8]
    for n in range(2, 400):
        tr, te = split_indices(n, np.ones(n, bool))
        assert len(te) == -(-n // 10), n
        assert len(tr) + len(te) == n
    assert train.dtype.kind == "i" and test.dtype.kind == "i"


def test_split_indices_drops_unusable_frames_and_keeps_one_training_frame():
    usable = np.ones(20, bool)
    usable[[0, 5, 19]] = False
    train, test = split_indices(20, usable)
    assert train.tolist() == [k for k in range(18) if k not in (0, 5)]
    assert test.tolist() == [18]
    # a single frame: nothing is held out
    train, test = split_indices(1, np.ones(1, bool))
    assert train.tolist() == [0] and test.tolist() == []
    train, test = split_indices(10, np.ones(10, bool), test_fraction=0.0)
    assert len(train) == 10 and len(test) == 0


# -- clips.projected_boxes ---------------------------------------------------------------------

def _K(f=100.0, cx=64.0, cy=64.0):
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])


def _pose(R=None, t=(0.0, 0.0, 50.0)):
    M = torch.eye(4)
    if R is not None:
        M[:3, :3] = torch.as_tensor(R, dtype=torch.float32)
    M[:3, 3] = torch.tensor(t)
    return M


def test_projected_boxes_identity_pose_by_hand():
    # cube of half side 5 cm, 50 cm in front of the camera: corners at z = 45 (near) and 55
    boxes = projected_boxes(_K(), _pose()[None], (-5, -5, -5), (5, 5, 5), 128, 128)
    assert boxes.shape == (1, 4) and boxes.dtype == torch.float32
    lo, hi = 64 - 100 * 5 / 45, 64 + 100 * 5 / 45  # 52.89, 75.11: the near face is the widest
    assert boxes[0].tolist() == pytest.approx([lo, lo, hi, hi], abs=1e-4)
    # an off-centre principal point and translation
    K = _K(f=200.0, cx=60.0, cy=70.0)
    boxes = projected_boxes(K, _pose(t=(2.0, -1.0, 40.0))[None], (-1, -2, -3), (1, 2, 3), 128, 128)
    # x_cam in [1, 3], y_cam in [-3, 1], z_cam in [37, 43]
    u0, u1 = 60 + 200 * 1 / 43, 60 + 200 * 3 / 37
    v0, v1 = 70 + 200 * -3 / 37, 70 + 200 * 1 / 37
    assert boxes[0].tolist() == pytest.approx([u0, v0, u1, v1], abs=1e-4)


def test_projected_boxes_agrees_with_project_box_and_clips_to_the_image():
    a = math.radians(25)
    R = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    poses = torch.stack([_pose(R, (1.0, 2.0, 60.0)), _pose(None, (-3.0, 0.5, 45.0))])
    bmin, bmax = (-4.0, -6.0, -3.0), (4.0, 5.0, 3.5)
    boxes = projected_boxes(_K(), poses, bmin, bmax, 128, 128)
    assert boxes.shape == (2, 4)
    for n in range(2):
        ref = project_box(_K(), poses[n], bmin, bmax)
        assert boxes[n].tolist() == pytest.approx(ref.tolist(), abs=1e-3)
    # a box bigger than the view is clipped to the image
    big = projected_boxes(_K(), _pose()[None], (-40, -40, -5), (40, 40, 5), 96, 128)
    assert big[0].tolist() == [0.0, 0.0, 128.0, 96.0]
    # a box entirely right of the image: a 1-pixel strip at the border, never empty
    right = projected_boxes(_K(), _pose(t=(200.0, 0.0, 50.0))[None], (-5, -5, -5), (5, 5, 5), 128, 128)
    u0, v0, u1, v1 = right[0].tolist()
    assert u0 == 127.0 and u1 == 128.0 and v0 < v1


# -- nerf.rays.sample_box_pixels -----------------------------------------------------------------

def test_sample_box_pixels_mostly_inside_the_box():
    g = torch.Generator().manual_seed(0)
    box = torch.tensor([10.0, 20.0, 50.0, 40.0])  # [u0, v0, u1, v1]
    ij = sample_box_pixels(1000, box, 64, 80, 0.95, generator=g)
    assert ij.shape == (1000, 2) and ij.dtype == torch.long
    i, j = ij[:, 0], ij[:, 1]
    assert (i >= 0).all() and (i < 64).all() and (j >= 0).all() and (j < 80).all()
    inside = (i >= 20) & (i < 40) & (j >= 10) & (j < 50)
    assert inside[:950].all()  # round(1000 * 0.95) drawn in the box
    assert inside.sum() >= 950
    assert inside.float().mean() < 1.0  # the other 5% come from the whole frame: some fall outside
    # the in-box draws cover the box (uniform), not one corner
    assert i[:950].min() == 20 and i[:950].max() == 39 and j[:950].min() == 10 and j[:950].max() == 49


def test_sample_box_pixels_at_the_image_border_and_fraction():
    g = torch.Generator().manual_seed(1)
    box = torch.tensor([100.0, 0.0, 128.0, 128.0])  # touches the right edge: never column 128
    ij = sample_box_pixels(4000, box, 128, 128, 1.0, generator=g)
    assert ij[:, 1].min() >= 100 and ij[:, 1].max() == 127 and ij[:, 0].max() <= 127
    ij = sample_box_pixels(33, torch.tensor([0.0, 0.0, 4.0, 4.0]), 64, 64, 0.5, generator=g)
    assert ij.shape == (33, 2)
    n_in = round(33 * 0.5)
    assert ((ij[:n_in] < 4).all())
    ij = sample_box_pixels(16, torch.tensor([3.0, 5.0, 9.0, 7.0]), 32, 32, 0.0, generator=g)
    assert ij.shape == (16, 2) and (ij >= 0).all() and (ij < 32).all()


def test_mouth_boxes_by_hand_and_frames_without_landmarks():
    lm = np.full((4, 478, 3), np.nan, np.float32)
    pts = np.zeros((len(MOUTH_REGION_LANDMARKS), 3), np.float32)
    pts[:, 0] = np.linspace(40, 60, len(pts))  # u 40..60: width 20, margin 0.2 * 20 = 4
    pts[:, 1] = np.linspace(70, 90, len(pts))  # v 70..90
    lm[0, list(MOUTH_REGION_LANDMARKS)] = pts
    lm[2, list(MOUTH_REGION_LANDMARKS)] = pts + [50, 30, 0]  # v up to 124 + 4: clipped to 100
    boxes = mouth_boxes(lm, height=100, width=120)
    np.testing.assert_allclose(boxes[0], [36, 66, 64, 94])
    np.testing.assert_allclose(boxes[2], [86, 96, 114, 100])
    np.testing.assert_allclose(boxes[1], boxes[0])  # no landmarks: the nearest valid frame's (ties: earlier)
    np.testing.assert_allclose(boxes[3], boxes[2])
    assert boxes.dtype == np.float32
    np.testing.assert_allclose(mouth_boxes(np.full((2, 478, 3), np.nan), 100, 120), [[0, 0, 120, 100]] * 2)


def test_frame_pixels_draws_the_mouth_share_inside_the_mouth_box():
    torch.manual_seed(0)
    head = torch.tensor([0.0, 0.0, 80.0, 64.0])
    mouth = torch.tensor([30.0, 40.0, 50.0, 50.0])
    ij = frame_pixels(200, head, mouth, 64, 80, TrainConfig(mouth_fraction=0.25))
    assert ij.shape == (200, 2)
    m = ij[150:]  # the last round(200 * 0.25) = 50 pixels
    assert ((m[:, 0] >= 40) & (m[:, 0] < 50) & (m[:, 1] >= 30) & (m[:, 1] < 50)).all()
    inside = (ij[:, 0] >= 40) & (ij[:, 0] < 50) & (ij[:, 1] >= 30) & (ij[:, 1] < 50)
    assert inside[:150].float().mean() < 0.3  # the head-box draws are spread over the frame
    # no mouth box or a zero share: MI-NeRF's draw alone
    assert frame_pixels(20, head, None, 64, 80, TrainConfig(mouth_fraction=0.25)).shape == (20, 2)


# -- runs.read_config ---------------------------------------------------------------------------

def _write_cfg(run, **over):
    run.mkdir(parents=True, exist_ok=True)
    cfg = {"format": "minerf-run", "version": 1, "model": {}, "train": {}, "identities": []}
    cfg.update(over)
    (run / "config.json").write_text(json.dumps(cfg))
    return cfg


def test_read_config_accepts_a_valid_config(tmp_path):
    cfg = _write_cfg(tmp_path / "run", identities=[{"name": "a"}])
    assert runs.read_config(tmp_path / "run") == cfg


def test_read_config_errors(tmp_path):
    with pytest.raises(MinerfError) as exc:
        runs.read_config(tmp_path / "missing")
    assert exc.value.exit_code == 1 and "not found" in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no config.json"):
        runs.read_config(tmp_path / "empty")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        runs.read_config(bad)
    _write_cfg(tmp_path / "fmt", format="minerf-store")
    with pytest.raises(FormatError, match="minerf-store"):
        runs.read_config(tmp_path / "fmt")
    _write_cfg(tmp_path / "new", version=99)
    with pytest.raises(FormatError, match="newer") as exc:
        runs.read_config(tmp_path / "new")
    assert exc.value.exit_code == 3 and "99" in str(exc.value)
    cfg = _write_cfg(tmp_path / "nokey")
    del cfg["identities"]
    (tmp_path / "nokey" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="identities"):
        runs.read_config(tmp_path / "nokey")


# -- rendering.face_box ---------------------------------------------------------------------------

def test_face_box_by_hand():
    """Training's test PSNR uses the same face crop as `minerf evaluate` (metrics.face_box)."""
    from minerf_cli import metrics

    pts = np.array([[40.0, 30.0, 0.0], [60.0, 70.0, 1.0], [50.0, 50.0, 0.0]])
    # centre (50, 50), extent 40 -> half side 40 * 1.2 / 2 = 24
    assert face_box(pts, 100, 100) == (26, 26, 74, 74)
    assert face_box(pts, 100, 100, scale=1.0) == (30, 30, 70, 70)
    near_edge = np.array([[90.0, 80.0], [99.0, 99.0]])
    assert face_box(near_edge, 100, 100) == tuple(int(v) for v in metrics.face_box(near_edge, (100, 100), 1.2))
    x0, y0, x1, y1 = face_box(near_edge, 100, 100)
    assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 100
    # NaN landmarks are ignored; none left -> None
    pts = np.array([[40.0, 30.0], [np.nan, np.nan], [60.0, 70.0], [1000.0, np.nan]])
    assert face_box(pts, 100, 100) == (26, 26, 74, 74)
    assert face_box(np.full((5, 3), np.nan), 100, 100) is None


# -- nerf.model.MINeRF.render_rays ----------------------------------------------------------------

@pytest.mark.parametrize("field,options", [
    ("vanilla", {"width": 32, "depth": 4, "color_width": 16}),
    ("fast", {"log2_table": 12, "max_res": 64, "levels": 4}),
])
def test_render_rays_miss_is_exactly_the_background(field, options):
    torch.manual_seed(0)
    cfg = ModelConfig(field=field, field_options=options, frames_per_video=[3], n_coarse=8, n_fine=8,
                      shared_field=(field == "fast"))
    model = MINeRF(cfg)
    K = _K()
    pose = _pose(t=(0.0, 0.0, 60.0))  # head box 60 cm in front of the camera
    # pixel (0, 0) looks 30+ degrees off-axis: misses the box; the centre pixel hits it
    ij = torch.tensor([[0, 0], [127, 127], [64, 64], [64, 60]])
    o, d = head_rays(K, pose, ij)
    _, _, hit = near_far_box(o, d, cfg.box_min, cfg.box_max)
    assert hit.tolist() == [False, False, True, True]
    bg = torch.tensor([[0.2, 0.5, 0.7], [1.0, 0.0, 0.25], [0.3, 0.3, 0.3], [0.9, 0.1, 0.4]])
    cond = torch.randn(model.conditioning.out_dim)
    latent = torch.randn(cfg.latent_dim)
    for perturb in (True, False):
        out = model.render_rays(o, d, cond, latent, bg, perturb=perturb)
        assert out["rgb"].shape == (4, 3)
        assert torch.equal(out["rgb"][:2], bg[:2])  # bit-exact
        assert torch.equal(out["opacity"][:2], torch.zeros(2))
        if "rgb_coarse" in out:
            assert torch.equal(out["rgb_coarse"][:2], bg[:2])
        assert torch.isfinite(out["rgb"]).all() and torch.isfinite(out["depth"]).all()
        assert (out["opacity"][2:] > 0).all()  # the rays through the box do see the field


def test_frames_stay_whole_on_a_gpu_up_to_a_quarter_of_its_memory(monkeypatch):
    from types import SimpleNamespace

    from minerf_cli import train

    assert train.preload_budget(torch.device("cpu")) == train.PRELOAD_BUDGET
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: SimpleNamespace(total_memory=80 * 2**30))
    assert train.preload_budget(torch.device("cuda")) == 20 * 2**30
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev: SimpleNamespace(total_memory=8 * 2**30))
    assert train.preload_budget(torch.device("cuda")) == train.PRELOAD_BUDGET  # never below the host budget


def test_a_batch_rebuilt_from_its_tensors_is_the_same_batch():
    from minerf_cli.training import Batch

    t = [torch.rand(4, 3) for _ in range(4)]
    batch = Batch(*t, None, torch.zeros(1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long), torch.rand(1, 1, 5), (4,))
    assert len(batch.tensors()) == 7  # no head masks: left out
    copy = batch.with_tensors([x.clone() for x in batch.tensors()])
    assert copy.heads is None and copy.per == (4,)
    assert all(torch.equal(a, b) and a is not b for a, b in zip(copy.tensors(), batch.tensors()))


def test_batch_codes_give_each_ray_its_frames_codes_and_smooth_windows():
    from minerf_cli.training import Batch, batch_codes

    torch.manual_seed(0)
    model = MINeRF(ModelConfig(expr_dim=5, latent_dim=4, frames_per_video=[6, 6], n_coarse=8, n_fine=8,
                               field_options={"width": 16, "depth": 2, "skips": ()}, smoothing_window=3))
    rays = [torch.rand(5, 3) for _ in range(4)]
    video, frames = torch.tensor([0, 1]), torch.tensor([[2], [4]])
    expr = torch.rand(2, 1, 5)
    cond, latent, lats, ids = batch_codes(model, Batch(*rays, None, video, frames, expr, (3, 2)))
    assert cond.shape == (5, model.conditioning.out_dim) and latent.shape == (5, 4)
    for k, rows in ((0, slice(0, 3)), (1, slice(3, 5))):
        want = model.conditioning(expr[k, 0], model.identity(video[k]))
        assert torch.allclose(cond[rows], want.expand_as(cond[rows]))
        assert torch.allclose(latent[rows], model.latent(video[k], frames[k, 0]).expand_as(latent[rows]))
    assert torch.equal(ids, model.identity(video)) and lats.shape == (2, 4)
    # one frame: shared codes; a window of 3: smoothed codes of the same shapes
    one = batch_codes(model, Batch(*rays, None, video[:1], frames[:1], expr[:1], (5,)))
    assert one[0].dim() == 1 and torch.allclose(one[0], cond[0])
    windows = torch.tensor([[1, 2, 3], [3, 4, 5]])
    smooth = batch_codes(model, Batch(*rays, None, video, windows, torch.rand(2, 3, 5), (3, 2)))
    assert smooth[0].shape == cond.shape and smooth[1].shape == latent.shape
