"""`minerf evaluate` end to end on two tiny synthetic talking heads (CPU, 8 frames at 256 px)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import metrics
from minerf_cli.app import app
from minerf_cli.evaluate import parse_range
from minerf_cli.errors import UsageError

runner = CliRunner()
N = 8  # frames per synthetic clip (0.32 s at 25 fps)

pytest.importorskip("dlib")


def evaluate(*args) -> tuple[int, dict | None, str]:
    res = runner.invoke(app, ["-q", "evaluate", *map(str, args)])
    out = json.loads(res.stdout) if res.exit_code == 0 else None
    return res.exit_code, out, res.stderr


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """Two synthetic identities: mp4s, prepped stores, /tracking on id00; frames of id00 in memory."""
    from minerf_cli.synth import synthesize

    root = Path(tmp_path_factory.mktemp("evaluate"))
    made = synthesize(root / "synth", ids=2, seconds=N / 25.0, size=256, fps=25.0, seed=0)
    out = {"root": root}
    for k, clip in enumerate(made):
        store = root / f"id{k:02d}.h5"
        res = runner.invoke(app, ["-q", "prep", clip["video"], "-o", str(store), "--size", "256"])
        assert res.exit_code == 0, res.output
        out[f"video{k}"], out[f"store{k}"] = Path(clip["video"]), store
    res = runner.invoke(app, ["-q", "fit3dmm", str(out["store0"])])
    assert res.exit_code == 0, res.output
    with h5py.File(out["store0"]) as f:
        out["frames"] = f["frames"][...]
        out["landmarks"] = f["landmarks/points"][...]
    assert len(out["frames"]) == N
    return out


def write_pngs(directory: Path, frames) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(directory / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return directory


@pytest.fixture(scope="module")
def noisy(clips) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = np.clip(clips["frames"] + rng.normal(0, 6, clips["frames"].shape), 0, 255).astype(np.uint8)
    return write_pngs(clips["root"] / "noisy", frames), frames


def test_paired_frames_against_a_store(clips, noisy):
    directory, frames = noisy
    code, out, err = evaluate(directory, "--ref", clips["store0"], "--identity-frames", 4)
    assert code == 0, err
    for key in ("psnr", "ssim", "lpips", "cpbd", "cpbd_reference", "csim", "acd", "face_distance",
                "frames_without_face", "exp_diff", "identity_frames", "face_crop_mean_side_px"):
        assert key in out, key
    assert out["mode"] == "paired" and out["kind"] == "images" and out["frames"] == N
    assert out["reference_frames"] == f"0:{N}" and out["size"] == [256, 256]
    # the same numbers by hand: the face crop of each reference frame's landmarks
    boxes = [metrics.face_box(lm, (256, 256), 1.2) for lm in clips["landmarks"]]
    psnr = np.mean([metrics.psnr(metrics.crop(g, b), metrics.crop(r, b)) for g, r, b in zip(frames, clips["frames"], boxes)])
    ssim = np.mean([metrics.ssim(metrics.crop(g, b), metrics.crop(r, b)) for g, r, b in zip(frames, clips["frames"], boxes)])
    assert out["psnr"] == pytest.approx(psnr, rel=1e-5) and 25 < out["psnr"] < 40
    assert out["ssim"] == pytest.approx(ssim, rel=1e-5) and out["ssim"] < 0.99
    assert 0 <= out["cpbd"] <= 1 and 0 <= out["cpbd_reference"] <= 1
    assert out["csim"] > 0.98 and out["acd"] == pytest.approx(1 - out["csim"], abs=1e-5)
    assert out["face_distance"] < 0.3 and out["same_person_fraction"] == 1.0
    assert out["identity_frames"] == 4 and out["identity_reference_frames"] == N
    assert out["frames_without_face"] == 0
    assert out["lpips"].startswith("skipped: no weights") and out["exp_diff"].startswith("skipped")


def test_ref_frames_choose_the_pairing(clips):
    directory = write_pngs(clips["root"] / "exact_2_8", clips["frames"][2:8])
    code, out, err = evaluate(directory, "--ref", clips["store0"], "--ref-frames", "2:8", "--identity-frames", 1)
    assert code == 0, err
    assert out["reference_frames"] == "2:8" and out["pairing"] == "--ref-frames"
    assert out["psnr"] == metrics.PSNR_CAP and out["ssim"] == pytest.approx(1.0)
    code, out, err = evaluate(directory, "--ref", clips["store0"], "--identity-frames", 1)  # paired with 0..5
    assert code == 0, err
    assert out["reference_frames"] == "0:6" and out["psnr"] < 60


def test_video_and_store_inputs_with_their_mean(clips, tmp_path):
    gen = tmp_path / "gen.h5"
    shutil.copy(clips["store0"], gen)
    with h5py.File(gen, "r+") as f:
        f["frames"][...] = f["frames"][...][::-1]
        f["frames"].attrs["reference_frames"] = np.arange(N)[::-1]
    code, out, err = evaluate(clips["video0"], gen, "--ref", clips["store0"], "--identity-frames", 1)
    assert code == 0, err
    assert out["count"] == 2 and [r["kind"] for r in out["inputs"]] == ["video", "store"]
    video, store = out["inputs"]
    assert video["psnr"] == metrics.PSNR_CAP  # prep stored the synthetic frames unchanged
    assert store["pairing"] == "the reference_frames attribute" and store["reference_frames"] == list(range(N))[::-1]
    assert store["psnr"] == metrics.PSNR_CAP and store["ssim"] == pytest.approx(1.0)
    assert out["mean"]["psnr"] == metrics.PSNR_CAP and "csim" in out["mean"]


def test_identity_only_and_exp_diff(clips):
    code, out, err = evaluate(clips["video1"], clips["video0"], "--ref", clips["store0"], "--identity-only",
                              "--driving", clips["store0"], "--identity-frames", 4)
    assert code == 0, err
    other, same = out["inputs"]
    for r in (other, same):
        assert r["mode"] == "identity-only" and r["psnr"].startswith("skipped") and r["lpips"].startswith("skipped")
        assert r["driving_frames"] == f"0:{N}" and r["exp_diff_frames"] == N and r["frames_without_face"] == 0
        assert 0 <= r["cpbd"] <= 1
    assert other["face_distance"] > same["face_distance"] + 0.15  # another synthetic person
    assert other["csim"] < same["csim"]
    assert same["exp_diff"] < 2e-4  # the driving store was tracked on these very frames
    assert other["exp_diff"] > 5 * same["exp_diff"]  # another clip's expressions


def test_reference_video_finds_its_own_faces(clips, noisy):
    directory, _ = noisy
    code, with_store, err = evaluate(directory, "--ref", clips["store0"], "--identity-frames", 1)
    assert code == 0, err
    code, with_video, err = evaluate(directory, "--ref", clips["video0"], "--identity-frames", 1)
    assert code == 0, err
    assert with_video["psnr"] == pytest.approx(with_store["psnr"], abs=0.3)


def _lpips_files(tmp_path: Path) -> tuple[Path, Path]:
    import torch

    torch.manual_seed(0)
    sd = metrics._lpips_class()().state_dict()
    torch.save({k: torch.randn_like(v) * 0.05 for k, v in sd.items() if k.startswith("features.")}, tmp_path / "vgg.pth")
    torch.save({k: torch.rand_like(v) for k, v in sd.items() if k.startswith("lin")}, tmp_path / "lin.pth")
    return tmp_path / "vgg.pth", tmp_path / "lin.pth"


def test_lpips_with_user_weights(clips, noisy, tmp_path):
    vgg, lin = _lpips_files(tmp_path)  # (random: this tests the plumbing, not LPIPS's values)
    two = write_pngs(tmp_path / "two", noisy[1][:2])  # VGG16 on the CPU takes ~1 s per crop pair
    code, out, err = evaluate(two, "--ref", clips["store0"], "--identity-frames", 1,
                              "--lpips-weights", vgg, "--lpips-lin", lin, "--device", "cpu")
    assert code == 0, err
    assert isinstance(out["lpips"], float) and out["lpips"] > 0
    net = metrics.load_lpips(vgg, lin)
    by_hand = []
    for i in range(2):
        box = metrics.face_box(clips["landmarks"][i], (256, 256))
        by_hand.append(metrics.lpips(net, metrics.crop(noisy[1][i], box), metrics.crop(clips["frames"][i], box)))
    assert out["lpips"] == pytest.approx(np.mean(by_hand), abs=1e-5)
    code, _, err = evaluate(two, "--ref", clips["store0"], "--lpips-weights", vgg, "--lpips-lin", vgg)
    assert code == 3 and "not an lpips vgg.pth" in err and len(err.strip().splitlines()) == 1


def _one_line_error(code: int, out, err: str, expect_code: int, *words: str) -> None:
    assert code == expect_code, err
    assert out is None
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


def test_bad_inputs(clips, noisy, tmp_path):
    store = clips["store0"]
    res = runner.invoke(app, ["evaluate", str(tmp_path / "missing.mp4"), "--ref", str(store)])
    assert res.stdout == ""
    _one_line_error(res.exit_code, None, res.stderr, 1, "missing.mp4", "not found")
    _one_line_error(*evaluate(noisy[0], "--ref", tmp_path / "nope.h5"), 1, "nope.h5", "not found")
    # frame counts that do not pair
    _one_line_error(*evaluate(noisy[0], "--ref", store, "--ref-frames", "0:5"), 2, "8 generated frames", "--ref-frames")
    longer = write_pngs(tmp_path / "longer", list(clips["frames"]) + [clips["frames"][0]])
    _one_line_error(*evaluate(longer, "--ref", store), 2, "9 generated frames", "only 8", "--identity-only")
    _one_line_error(*evaluate(noisy[0], "--ref", store, "--ref-frames", "4:12"), 2, "out of range")
    # sizes that do not pair
    small = write_pngs(tmp_path / "small", [cv2.resize(f, (128, 128)) for f in clips["frames"]])
    _one_line_error(*evaluate(small, "--ref", store), 1, "128x128", "256x256")
    # options
    _one_line_error(*evaluate(noisy[0], "--ref", store, "--ref-frames", "a-b"), 2, "A:B")
    _one_line_error(*evaluate(noisy[0], "--ref", store, "--lpips-weights", tmp_path / "v.pth"), 2, "--lpips-lin")
    # inputs of the wrong kind
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(*evaluate(empty, "--ref", store), 1, "no PNG")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    _one_line_error(*evaluate(junk, "--ref", store), 1, "junk.mp4")
    _one_line_error(*evaluate(noisy[0], "--ref", store, "--driving", clips["store1"]), 3, "no /tracking", "fit3dmm")


def test_parse_range():
    assert parse_range("2:5", 10).tolist() == [2, 3, 4]
    assert parse_range("7:", 10).tolist() == [7, 8, 9]
    assert parse_range(":2", 10).tolist() == [0, 1]
    for bad in ("5:2", "x", "1:2:3", "-1:3"):
        with pytest.raises(UsageError):
            parse_range(bad, 10)


def test_no_face_frames_are_counted(clips, tmp_path):
    frames = clips["frames"].copy()
    frames[3] = 127  # a grey frame: no face
    frames[5] = 127
    directory = write_pngs(tmp_path / "holes", frames)
    code, out, err = evaluate(directory, "--ref", clips["store0"], "--identity-only", "--identity-frames", 0)
    assert code == 0, err
    assert out["frames_without_face"] == 2 and out["frames_without_face_list"] == "3, 5"
    assert out["face_found_fraction"] == pytest.approx(0.75)
    assert out["identity_frames"] == N - 2  # only frames with a face have a descriptor
    assert math.isfinite(out["csim"])


def test_jpeg_store_input(clips, tmp_path):
    pytest.importorskip("minerf_cli.repack")
    jpeg = tmp_path / "q80.h5"
    res = runner.invoke(app, ["-q", "repack", str(clips["store0"]), "-o", str(jpeg), "--jpeg-quality", "80"])
    assert res.exit_code == 0, res.output
    code, out, err = evaluate(jpeg, "--ref", clips["store0"], "--identity-frames", 1)
    assert code == 0, err
    assert out["kind"] == "store" and out["frames"] == N and out["size"] == [256, 256]
    assert 30 < out["psnr"] < 60 and out["ssim"] < 1.0  # JPEG q80: close, not identical
