"""minerf_cli.metrics: hand-checkable values, a reference implementation, and the loaders."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from minerf_cli import metrics
from minerf_cli.errors import FormatError, MinerfError

# ----------------------------------------------------------------------------- PSNR


def test_psnr_hand_computed():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[..., :] = 5  # every value off by 5: MSE 25
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25))  # 34.1514 dB
    assert metrics.psnr(a, b) == pytest.approx(34.15140352, abs=1e-6)
    c = a.copy()
    c[0, 0, 0] = 12  # one value of 48 off by 12: MSE 144 / 48 = 3
    assert metrics.psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 3))
    assert metrics.psnr(a, a) == math.inf
    # floats have a data range of 1
    assert metrics.psnr(np.zeros((2, 2)), np.full((2, 2), 0.1)) == pytest.approx(20.0)


def test_psnr_mask_restricts_the_error():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 100
    b[3, 3] = 10
    mask = np.zeros((4, 4), bool)
    mask[2:, 2:] = True  # (3, 3) only: MSE 100 / 4 = 25
    assert metrics.psnr(a, b, mask) == pytest.approx(10 * math.log10(255**2 / 25))
    assert math.isnan(metrics.psnr(a, b, np.zeros((4, 4), bool)))
    with pytest.raises(ValueError):
        metrics.psnr(a, b[:3])


# ----------------------------------------------------------------------------- SSIM


def _texture(seed: int = 0, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)), (0, 0), 2.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_ssim_identical_is_one_and_noise_lowers_it():
    a = _texture()
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    s = metrics.ssim(a, noisy)
    assert 0.0 < s < 0.95
    assert metrics.ssim(noisy, a) == pytest.approx(s)


def test_ssim_constant_images_hand_computed():
    # flat images: variances and covariance are 0, so SSIM is the luminance term
    # (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) with C1 = (0.01 * 255)^2
    a = np.full((20, 20, 3), 100, np.uint8)
    b = np.full((20, 20, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    expect = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert metrics.ssim(a, b) == pytest.approx(expect, abs=1e-9)  # 0.995476
    assert metrics.ssim(a, b) == pytest.approx(0.99547646, abs=1e-6)


def test_ssim_matches_scikit_image_when_available():
    skm = pytest.importorskip("skimage.metrics")
    a = _texture(2, 64)
    b = np.clip(a.astype(int) + np.random.default_rng(3).integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    ref = skm.structural_similarity(a, b, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-6)


# ----------------------------------------------------------------------------- CPBD


def _pattern(size: int = 192, seed: int = 0) -> np.ndarray:
    """A sharp synthetic pattern: 60 anti-aliased discs of random grey levels and sizes."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 128, np.uint8)
    for _ in range(60):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, centre, int(rng.integers(4, 30)), int(rng.integers(10, 245)), -1, lineType=cv2.LINE_AA)
    return img


def test_cpbd_sharp_pattern_beats_its_blurred_copies():
    sharp = _pattern()
    blurred = [metrics.cpbd(cv2.GaussianBlur(sharp, (0, 0), s)) for s in (0.5, 0.7, 1.0, 2.0)]
    assert metrics.cpbd(sharp) > 0.85  # anti-aliased edges 2-3 px wide: P(blur) <= 0.63
    assert all(0.0 <= s <= 1.0 for s in blurred)
    assert metrics.cpbd(sharp) > blurred[0] + 0.5
    assert blurred == sorted(blurred, reverse=True)  # more blur, lower score
    assert blurred[2] < 0.05  # edges ~7 px wide at sigma 1: P(blur) ~ 1


def test_cpbd_flat_image_has_no_edges():
    assert math.isnan(metrics.cpbd(np.full((64, 64), 128, np.uint8)))
    # an RGB input is converted to grey
    rgb = np.repeat(_pattern(128)[..., None], 3, axis=2)
    assert metrics.cpbd(rgb) == pytest.approx(metrics.cpbd(_pattern(128)))
    assert metrics.cpbd(_pattern(48)) > 0.5  # smaller than a 64x64 block: one block


def _reference_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The loops of the authors' reference code (Marziliano widths), for gradients at 0/180 deg."""
    h, w = image.shape
    out = np.zeros(image.shape)
    gy, gx = np.gradient(image)
    for row in range(1, h - 1):
        for col in range(1, w - 1):
            if not edges[row, col]:
                continue
            angle = math.degrees(math.atan2(gy[row, col], gx[row, col])) if gx[row, col] != 0 else 0.0
            q = 45 * np.round(angle / 45)
            if abs(q) == 180:
                sign = -1
            elif q == 0:
                sign = 1
            else:
                continue
            for m in range(101):
                inner, outer = col - 1 - m, col - 2 - m
                if outer < 0 or sign * (image[row, outer] - image[row, inner]) >= 0:
                    break
            left = m + 1
            for m in range(101):
                inner, outer = col + 1 + m, col + 2 + m
                if outer >= w or sign * (image[row, outer] - image[row, inner]) <= 0:
                    break
            out[row, col] = left + m + 1
    return out


def test_edge_widths_match_the_reference_loops():
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (40, 50)), (0, 0), 1.5)
    img = np.round(img)
    edges = rng.random(img.shape) < 0.3
    np.testing.assert_array_equal(metrics._edge_widths(img, edges), _reference_widths(edges, img))


# ----------------------------------------------------------------------------- face box


def test_face_box_square_centred_and_clipped():
    pts = np.array([[10.0, 20.0], [30.0, 60.0], [np.nan, np.nan]])  # box 20 x 40, centre (20, 40)
    assert metrics.face_box(pts, scale=1.2).tolist() == [-4, 16, 44, 64]  # side 48
    assert metrics.face_box(pts, (100, 100), scale=1.2).tolist() == [0, 16, 48, 64]  # shifted in
    assert metrics.face_box(pts, (30, 100), scale=1.2).tolist() == [5, 0, 35, 30]  # shrunk to 30
    mp478 = np.zeros((478, 3))
    mp478[:, :2] = np.random.default_rng(0).uniform(50, 150, (478, 2))
    box = metrics.face_box(mp478, (256, 256))
    assert box[2] - box[0] == box[3] - box[1] and 0 <= box[0] and box[2] <= 256
    with pytest.raises(ValueError):
        metrics.face_box(np.full((68, 2), np.nan))


def test_crop_cuts_the_box():
    img = np.arange(100).reshape(10, 10)
    assert metrics.crop(img, np.array([2, 3, 5, 7])).tolist() == img[3:7, 2:5].tolist()


# ----------------------------------------------------------------------------- identity


def test_identity_scores_hand_computed():
    ref = np.zeros((2, 128))
    ref[0, 0], ref[1, 0] = 1.0, 3.0  # centroid (2, 0, ...)
    same = np.zeros((1, 128))
    same[0, 0] = 2.0
    s = metrics.identity_scores(same, ref)
    assert s["csim"] == pytest.approx(1.0) and s["acd"] == pytest.approx(0.0)
    assert s["face_distance"] == pytest.approx(0.0) and s["same_person_fraction"] == 1.0
    ortho = np.zeros((2, 128))
    ortho[0, 1], ortho[1, 0] = 2.0, 1.0  # cos 0 at distance sqrt(8); cos 1 at distance 1
    s = metrics.identity_scores(ortho, ref)
    assert s["csim"] == pytest.approx(0.5) and s["acd"] == pytest.approx(0.5)
    assert s["face_distance"] == pytest.approx((math.sqrt(8) + 1) / 2)
    assert s["same_person_fraction"] == 0.0
    assert math.isnan(metrics.identity_scores(np.zeros((0, 128)), ref)["csim"])


def test_dlib_models_are_found_without_importing_the_package():
    import sys

    pytest.importorskip("dlib")
    d = metrics.dlib_models_dir()
    assert (d / "shape_predictor_5_face_landmarks.dat").is_file()
    assert "face_recognition_models" not in sys.modules  # its __init__ needs pkg_resources


@pytest.fixture(scope="module")
def synthetic_faces():
    """Frames 0 and 4 of two synthetic identities (256 px), rendered without video coding."""
    from minerf_cli.synth import clip_plan, identity_seeds, render_frames

    out = []
    for seed in identity_seeds(0, 2):
        frames = list(render_frames(clip_plan(seed, seconds=0.2, size=256)))
        out.append((frames[0], frames[4]))
    return out


def test_dlib_descriptor_distances(synthetic_faces):
    pytest.importorskip("dlib")
    ident = metrics.FaceIdentity()
    (a0, a4), (b0, _) = synthetic_faces
    da0, da4, db0 = (ident.descriptor(img) for img in (a0, a4, b0))
    assert da0 is not None and da0.shape == (128,)
    assert np.linalg.norm(da0 - ident.descriptor(a0)) < 1e-9  # the same image: the same descriptor
    same = np.linalg.norm(da0 - da4)
    other = np.linalg.norm(da0 - db0)
    assert same < 0.3  # another frame of the same synthetic person
    assert other > same + 0.15  # measured: 0.43 vs 0.13 for these two identities
    assert ident.descriptor(np.full((128, 128, 3), 90, np.uint8)) is None  # no face, no descriptor
    # a box given explicitly (as from landmarks) gives nearly the detector's descriptor
    box = ident.detect(a0)
    assert np.linalg.norm(ident.descriptor(a0, box) - da0) < 1e-9


def test_dlib_box_from_landmarks_is_square_inside_the_landmarks_extent():
    pts = np.array([[100.0, 80.0], [200.0, 80.0], [100.0, 200.0], [200.0, 200.0]])  # w 100, h 120
    l, t, r, b = metrics.dlib_box_from_landmarks(pts)
    assert r - l == b - t == round(0.5 * (100 + 0.85 * 120))
    assert (l + r) / 2 == pytest.approx(150, abs=1) and (t + b) / 2 == pytest.approx(140, abs=1)


# ----------------------------------------------------------------------------- LPIPS


def _random_lpips_files(tmp_path, extra=None):
    import torch

    torch.manual_seed(0)
    sd = metrics._lpips_class()().state_dict()
    vgg = {k: torch.randn_like(v) * 0.05 for k, v in sd.items() if k.startswith("features.")}
    vgg["classifier.0.weight"] = torch.zeros(3, 3)  # torchvision's full vgg16 has these: ignored
    lin = {k: torch.rand_like(v) for k, v in sd.items() if k.startswith("lin")}
    if extra:
        extra(vgg, lin)
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "lin.pth")
    return tmp_path / "vgg16.pth", tmp_path / "lin.pth", vgg, lin


def test_lpips_state_dict_keys_follow_torchvision_and_lpips():
    keys = set(metrics._lpips_class()().state_dict())
    convs = {f"features.{i}.{p}" for i, _, _ in metrics.VGG16_CONVS for p in ("weight", "bias")}
    lins = {f"lin{k}.model.1.weight" for k in range(5)}
    assert keys == convs | lins
    assert len(convs) == 26


def test_lpips_loads_user_weights_and_measures(tmp_path):
    import torch

    vgg_path, lin_path, vgg, _ = _random_lpips_files(tmp_path)
    net = metrics.load_lpips(vgg_path, lin_path)
    assert torch.equal(net.features[28].weight, vgg["features.28.weight"])
    a = _texture(0, 48)
    b = _texture(1, 48)
    assert metrics.lpips(net, a, a) == pytest.approx(0.0, abs=1e-7)
    d = metrics.lpips(net, a, b)
    assert d > 0 and metrics.lpips(net, b, a) == pytest.approx(d, rel=1e-5)


def test_lpips_accepts_lpips_slice_naming(tmp_path):
    def rename(vgg, lin):
        for k in [k for k in vgg if k.startswith("features.")]:
            idx = int(k.split(".")[1])
            sl = next(s for s, end in enumerate(metrics.LPIPS_TAPS, 1) if idx < end)
            vgg[f"net.slice{sl}.{k.split('.', 1)[1]}"] = vgg.pop(k)

    vgg_path, lin_path, _, _ = _random_lpips_files(tmp_path, rename)
    metrics.load_lpips(vgg_path, lin_path)


def test_lpips_wrong_files_are_refused_clearly(tmp_path):
    import torch

    vgg_path, lin_path, _, _ = _random_lpips_files(tmp_path)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(FormatError, match=r"wrong\.pth.*not a torchvision vgg16 state dict.*missing.*features\.0\.weight"):
        metrics.load_lpips(wrong, lin_path)
    with pytest.raises(FormatError, match=r"not an lpips vgg.pth state dict.*lin0\.model\.1\.weight"):
        metrics.load_lpips(vgg_path, wrong)
    with pytest.raises(FormatError, match="not an lpips"):
        metrics.load_lpips(vgg_path, vgg_path)  # the two files swapped

    def bad_shape(vgg, lin):
        lin["lin2.model.1.weight"] = torch.zeros(1, 64, 1, 1)

    (tmp_path / "shape").mkdir()
    vgg2, lin2, _, _ = _random_lpips_files(tmp_path / "shape", bad_shape)
    with pytest.raises(FormatError, match=r"lin2\.model\.1\.weight has shape \(1, 64, 1, 1\), expected \(1, 256, 1, 1\)"):
        metrics.load_lpips(vgg2, lin2)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="junk.pth"):
        metrics.load_lpips(junk, lin_path)
    with pytest.raises(MinerfError, match="not found"):
        metrics.load_lpips(tmp_path / "missing.pth", lin_path)


def test_nearest_valid_by_hand():
    from minerf_cli.metrics import nearest_valid

    ok = np.array([False, False, True, False, False, False, True, False])
    # 0,1 -> 2; 3,4 -> 2 (4: tie between 2 and 6 goes to the earlier); 5 -> 6; 7 -> 6
    assert nearest_valid(ok).tolist() == [2, 2, 2, 2, 2, 6, 6, 6]
    assert nearest_valid(np.array([True, True])).tolist() == [0, 1]
    assert nearest_valid(np.array([False, True, False])).tolist() == [1, 1, 1]
