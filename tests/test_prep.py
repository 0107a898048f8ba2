"""`minerf prep`: errors and the store it writes (CPU, fast).

Error paths use tiny inputs made here. Positive runs use a synthetic talking head when
minerf_cli.synth is there, and the real clips of ../shared (marked realdata, skipped when
absent; never copied into the repo).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli.app import app
from minerf_cli.chunkio import ChunkWriter, chunked_dataset
from minerf_cli.crop import choose_crop
from minerf_cli.faces import Detection
from minerf_cli.masks import BackgroundPlate, head_mask
from minerf_cli.prep import _frame_ranges, _ranges
from minerf_cli.store import open_store
from minerf_cli.video import ffmpeg_exe, write_video

REPO = Path(__file__).resolve().parents[1]
_VIDEOS = REPO.parent / "shared" / "data" / "talking" / "videos"  # beside the checkout, as in CI
VIDEOS = _VIDEOS if _VIDEOS.is_dir() else None
REAL_CLIP = "styletalk_feifeili_clip3_av.mp4"

realdata = pytest.mark.realdata
needs_real = pytest.mark.skipif(VIDEOS is None or not (VIDEOS / REAL_CLIP).exists(),
                                reason="real clips (../shared/data/talking/videos) are absent")


def _mediapipe_ok() -> bool:
    try:
        import mediapipe as mp
    except ImportError:
        return False
    return hasattr(mp, "solutions")


needs_mediapipe = pytest.mark.skipif(not _mediapipe_ok(), reason="mediapipe 0.10.21 is not installed")


def run(*args: str):
    return CliRunner().invoke(app, ["prep", *map(str, args)])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix in (".h5", ".part"))


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


# ----------------------------------------------------------------------------- errors

def test_corrupt_file_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    res = run(bad, "-o", tmp_path / "out.h5")
    assert res.exit_code == 1
    assert str(bad) in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert res.stdout == ""
    assert leftovers(tmp_path) == []


def test_empty_file_fails_cleanly(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    res = run(empty, "-o", tmp_path / "out.h5")
    assert res.exit_code == 1
    assert "empty" in res.stderr and str(empty) in res.stderr
    assert leftovers(tmp_path) == []


def test_missing_file(tmp_path):
    res = run(tmp_path / "nope.mp4", "-o", tmp_path / "out.h5")
    assert res.exit_code == 1 and "not found" in res.stderr


@pytest.fixture(scope="module")
def grey_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grey") / "grey.mp4"
    write_video(path, [np.full((96, 128, 3), 120, np.uint8)] * 12, fps=12)
    return path


@needs_mediapipe
def test_no_face(grey_clip, tmp_path):
    res = run(grey_clip, "-o", tmp_path / "out.h5")
    assert res.exit_code == 1
    assert "no face" in res.stderr and str(grey_clip) in res.stderr
    assert leftovers(tmp_path) == []


def test_existing_output_needs_force(grey_clip, tmp_path):
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep me")
    res = run(grey_clip, "-o", out)
    assert res.exit_code == 2 and "--force" in res.stderr
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("args", [["--size", "31"], ["--min-valid", "1.5"], ["--start", "2", "--end", "1"],
                                  ["--max-frames", "0"]])
def test_bad_options(grey_clip, tmp_path, args):
    res = run(grey_clip, "-o", tmp_path / "out.h5", *args)
    assert res.exit_code == 2
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- units

def test_crop_is_square_even_and_inside_the_frame():
    faces = [Detection(600, 200, 700, 300, 0.9), Detection(610, 205, 712, 305, 0.9)]
    box = choose_crop(faces, 1280, 720)
    assert box.side % 2 == 0 and box.x0 % 2 == 0 and box.y0 % 2 == 0
    assert 0 <= box.x0 and box.x0 + box.side <= 1280 and 0 <= box.y0 and box.y0 + box.side <= 720
    assert 280 <= box.side <= 400  # ~3x the face
    # every face inside; the face centre above the crop centre
    assert box.x0 <= 600 and box.x0 + box.side >= 712 and box.y0 <= 200 and box.y0 + box.side >= 305
    assert 252 < box.y0 + box.side / 2
    # a face near the corner of a small frame: clamped, never padded
    corner = choose_crop([Detection(0, 0, 80, 80, 0.9)], 200, 150)
    assert corner.x0 == 0 and corner.y0 == 0 and corner.side == 150


def test_ranges_text():
    assert _ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert _frame_ranges([2, 3], sample_fps=5, fps=25) == "10-19"


def test_chunk_writer_writes_plain_gzip_datasets(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 8, (5, 16, 16, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = chunked_dataset(f, "x", (16, 16, 3), "uint8")
        with ChunkWriter() as w:
            for i, item in enumerate(data):
                w.put(ds, i, item)
        ChunkWriter.trim(ds, len(data))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert f["x"].compression == "gzip" and f["x"].chunks == (1, 16, 16, 3)
        np.testing.assert_array_equal(f["x"][()], data)


def test_background_plate_is_the_median_outside_the_person():
    rng = np.random.default_rng(2)
    bg = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    plate = BackgroundPlate(max_samples=10, dilate=0.0)
    for k in range(10):
        frame = bg.copy()
        person = np.zeros((64, 64), np.uint8)
        person[20:40, 10 + 2 * k:30 + 2 * k] = 255  # a moving "person"
        frame[person > 0] = 0
        plate.add(frame, person)
    out, holes = plate.plate()
    seen = np.ones((64, 64), bool)
    seen[20:40, 28:30] = False  # covered in every sample
    assert np.array_equal(out[seen], bg[seen])
    assert 0 < holes < 0.05


def test_head_mask_is_inside_person_and_covers_the_face():
    pts = np.zeros((478, 3), np.float32)
    ang = np.linspace(0, 2 * np.pi, 478)
    pts[:, 0], pts[:, 1] = 50 + 15 * np.cos(ang), 50 + 20 * np.sin(ang)
    person = np.zeros((100, 100), np.uint8)
    person[10:, 25:75] = 255
    head = head_mask(pts, person)
    assert head[50, 50] == 255 and head[15, 50] == 255  # face and the "hair" above it
    assert head[95, 50] == 0  # no neck below the jaw
    assert not np.any(head[person == 0])
    assert head_mask(None, person.copy()).max() == 0


# ----------------------------------------------------------------------------- synthetic clip

@needs_mediapipe
def test_synthetic_talking_head(synth_clip, tmp_path):
    out = tmp_path / "syn.h5"
    res = run(synth_clip["video"], "-o", out, "--size", "256")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    n = synth_clip["frames"]
    assert summary["frames"] == n and summary["fps"] == 25.0 and summary["has_audio"]
    assert summary["valid_fraction"] == 1.0
    _check_store(out, n, 256, audio=True)
    with h5py.File(out) as f:
        assert list(f["frames"].attrs["crop_box"]) == [0, 0, 256]
        # the synthetic head's backdrop is a smooth colour: the plate is, too
        assert np.abs(np.diff(f["background"][()].astype(float), axis=0)).mean() < 3
    # the stored frames are the video's frames (lossless store, 1:1 crop)
    from minerf_cli.video import read_frames
    first = next(read_frames(Path(synth_clip["video"])))
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["frames"][0], first)


# ----------------------------------------------------------------------------- real clips

def _check_store(path: Path, n: int, size: int, audio: bool) -> None:
    with open_store(path) as f:
        assert f["frames"].shape == (n, size, size, 3) and f["frames"].compression == "gzip"
        for key in ("fps", "crop_box", "source_size", "source_fps", "start_time"):
            assert key in f["frames"].attrs
        x0, y0, side = f["frames"].attrs["crop_box"]
        w, h = f["frames"].attrs["source_size"]
        assert 0 <= x0 and x0 + side <= w and 0 <= y0 and y0 + side <= h
        frames = f["frames"][()]
        assert frames.std() > 10  # real content, not blank chunks
        valid = f["landmarks/valid"][()]
        pts = f["landmarks/points"][()]
        assert pts.shape == (n, 478, 3) and valid.mean() >= 0.9
        assert np.isnan(pts[~valid]).all()
        inside = (pts[valid][..., :2] >= 0) & (pts[valid][..., :2] < size)
        assert inside.mean() > 0.99
        head, person = f["masks/head"][()], f["masks/person"][()]
        assert head.shape == person.shape == (n, size, size)
        assert set(np.unique(head)) <= {0, 255} and set(np.unique(person)) <= {0, 255}
        assert not np.any(head[person == 0])  # head within person
        hs = (head > 0).mean(axis=(1, 2))
        assert (hs[valid] > 0.03).all() and (hs < 0.8).all()
        # the nose tip (landmark 1) is inside the head mask
        k = int(np.flatnonzero(valid)[0])
        nx, ny = np.clip(pts[k, 1, :2].astype(int), 0, size - 1)
        assert head[k, ny, nx] == 255
        assert f["background"].shape == (size, size, 3)
        assert len(f.attrs["source_sha256"]) == 64
        if audio:
            pcm = f["audio/pcm"][()]
            assert f["audio"].attrs["sample_rate"] == 16000
            assert len(pcm) == round(n / f["frames"].attrs["fps"] * 16000)
            assert np.isfinite(pcm).all() and np.abs(pcm).max() <= 1.0 and pcm.std() > 1e-4
        else:
            assert "audio" not in f


@realdata
@needs_real
@needs_mediapipe
def test_real_clip(tmp_path):
    out = tmp_path / "clip.h5"
    res = run(VIDEOS / REAL_CLIP, "-o", out, "--max-frames", "30", "--size", "256")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["output"] == str(out) and summary["frames"] == 30 and summary["has_audio"]
    assert summary["valid_fraction"] >= 0.98
    _check_store(out, 30, 256, audio=True)
    assert leftovers(tmp_path) == ["clip.h5"]
    # again without --force: refused; with --force: replaced
    assert run(VIDEOS / REAL_CLIP, "-o", out, "--max-frames", "5").exit_code == 2
    res = run(VIDEOS / REAL_CLIP, "-o", out, "--max-frames", "5", "--size", "128", "--start", "1", "--force")
    assert res.exit_code == 0, res.stderr
    _check_store(out, 5, 128, audio=True)
    with h5py.File(out) as f:
        assert f["frames"].attrs["start_time"] == 1.0


@needs_mediapipe
def test_clip_without_audio_is_accepted_with_a_warning(synth_clip, tmp_path):
    silent = tmp_path / "silent.mkv"
    ffmpeg("-i", str(synth_clip["video"]), "-t", "1", "-an", "-c:v", "copy", str(silent))
    out = tmp_path / "silent.h5"
    res = run(silent, "-o", out, "--size", "128")
    assert res.exit_code == 0, res.stderr
    assert "no audio" in res.stderr
    summary = json.loads(res.stdout)
    assert summary["has_audio"] is False
    _check_store(out, summary["frames"], 128, audio=False)


@needs_mediapipe
def test_two_faces_are_refused(synth_clip, tmp_path):
    two = tmp_path / "two.mp4"
    ffmpeg("-i", str(synth_clip["video"]), "-t", "1", "-filter_complex", "[0:v][0:v]hstack", "-an", str(two))
    res = run(two, "-o", tmp_path / "two.h5")
    assert res.exit_code == 1
    assert "2 faces in frames" in res.stderr and str(two) in res.stderr
    assert leftovers(tmp_path) == []


@needs_mediapipe
def test_face_lost_too_often_is_refused(synth_clip, tmp_path):
    half = tmp_path / "half.mp4"
    ffmpeg("-i", str(synth_clip["video"]), "-t", "1", "-vf", "drawbox=enable='gte(t,0.5)':color=black:t=fill",
           str(half))
    res = run(half, "-o", tmp_path / "half.h5", "--size", "128")
    assert res.exit_code == 1
    assert "only" in res.stderr and "--min-valid" in res.stderr
    assert leftovers(tmp_path) == []
    res = run(half, "-o", tmp_path / "half.h5", "--size", "128", "--min-valid", "0.4")
    assert res.exit_code == 0, res.stderr
    assert 0.4 <= json.loads(res.stdout)["valid_fraction"] <= 0.6
