"""`minerf synth --store`: synthetic heads rendered straight into ready-to-train stores with
ground-truth landmarks, masks, background and tracking (no ffmpeg, mediapipe or fit3dmm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import raster, store, synth, synth_store
from minerf_cli.app import app
from minerf_cli.clips import load_clip
from minerf_cli.facemodel import load_face_model
from minerf_cli.faces import JAW_LINE
from minerf_cli.synth_head import HeadRenderer
from minerf_cli.tracking import landmark_basis, load_correspondence

runner = CliRunner()
SIZE, SECONDS, FPS = 128, 0.4, 25.0  # 10 frames
N = 10
TINY_TRAIN = ["--samples", "8:8", "--field-option", "width=32", "--field-option", "depth=4",
              "--field-option", "color_width=16", "--rays", "32", "--device", "cpu", "--test-frames", "1",
              "--val-every", "1000"]


def ok(res) -> dict:
    assert res.exit_code == 0, f"exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("synth_store") / "a.h5"
    summary = synth_store.synthesize_store(path, identity_seed=5, seconds=SECONDS, size=SIZE, fps=FPS)
    plan = synth.clip_plan(5, SECONDS, SIZE, FPS)
    renderer = HeadRenderer(plan["look"], SIZE)
    return {"path": path, "summary": summary, "plan": plan, "renderer": renderer,
            "cams": synth_store.cameras(plan, renderer)}


@pytest.fixture(scope="module")
def cli_stores(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_cli") / "data"
    s = ok(runner.invoke(app, ["-q", "synth", "-o", str(out), "--ids", "2", "--seconds", str(SECONDS), "--size",
                               str(SIZE), "--store", "--seed", "4"]))
    assert [Path(c["store"]).name for c in s["stores"]] == ["synth_id00.h5", "synth_id01.h5"]
    assert all(c["frames"] == N for c in s["stores"]) and s["frames_codec"] == "lossless"
    return out


def test_store_validates_and_has_every_node(one):
    assert one["summary"]["frames"] == N
    with store.open_store(one["path"], require=("frames", "audio", "landmarks", "masks", "background",
                                                 "tracking")) as f:
        sym = store.validate(f, one["path"])
        assert (sym["N"], sym["H"], sym["W"], sym["E"], sym["I"]) == (N, SIZE, SIZE, 53, 100)
        assert list(f["frames"].attrs["crop_box"]) == [0, 0, SIZE]
        assert float(f["frames"].attrs["fps"]) == FPS
        pcm = f["audio/pcm"][...]
        assert f["audio"].attrs["sample_rate"] == 16000 and pcm.dtype == np.float32
        assert len(pcm) == N * 640 and np.abs(pcm).max() > 0
        np.testing.assert_array_equal(pcm, one["plan"]["speech"].pcm[: N * 640])
        assert f["landmarks/valid"][...].all()
        names = [s.decode() for s in f["tracking"].attrs["expression_names"]]
        assert names == list(load_face_model().expression_names)
        assert f["tracking"].attrs["camera_convention"] == "opencv" and f["tracking"].attrs["units"] == "cm"
        np.testing.assert_array_equal(f["background"][...], one["renderer"].plate)


def test_tracking_is_the_ground_truth(one):
    plan, r = one["plan"], one["renderer"]
    with h5py.File(one["path"], "r") as f:
        np.testing.assert_array_equal(f["tracking/expression"][...], plan["expression"].astype(np.float32))
        np.testing.assert_allclose(f["tracking/camera_from_head"][...], one["cams"], atol=1e-5)
        np.testing.assert_array_equal(f["tracking/identity"][...], plan["look"].identity)
        np.testing.assert_allclose(f["tracking/intrinsics"][...], r.K, rtol=1e-6)
        frames = store.FrameReader(f)[0:N]
    # the frames are the renderer's for that pose and expression (lossless)
    for k in (0, N - 1):
        np.testing.assert_array_equal(frames[k], r.render(plan["expression"][k], one["cams"][k]))
    # and the same pose / expression as the mp4 path's ground truth
    clip = load_clip(one["path"])
    assert clip.n_frames == N and len(clip.train_idx) + len(clip.test_idx) == N
    np.testing.assert_array_equal(clip.expression.numpy(), plan["expression"])
    np.testing.assert_allclose(clip.camera_from_head.numpy(), one["cams"], atol=1e-5)
    np.testing.assert_allclose(clip.K.numpy(), r.K, rtol=1e-6)


def test_landmarks_are_the_trackers_model_projected(one):
    r, cams, ex = one["renderer"], one["cams"], one["plan"]["expression"]
    with h5py.File(one["path"], "r") as f:
        pts = f["landmarks/points"][...]
    assert pts.shape == (N, 478, 3) and np.isfinite(pts).all()
    corr = load_correspondence()
    mean, idb, exb = landmark_basis(load_face_model(), corr)
    k = 3
    head = mean + np.tensordot(r.look.identity, idb, (0, 0)) + np.tensordot(ex[k], exb, (0, 0))
    uv = raster.project(raster.transform(head, cams[k]), r.K)[:, :2]
    np.testing.assert_allclose(pts[k, corr.landmark, :2], uv, atol=1e-3)
    # inside the frame, on the face: the nose tip (1) is nearer than the face's mean depth
    assert (pts[..., :2] > 0).all() and (pts[..., :2] < SIZE).all()
    assert (pts[:, 1, 2] < 0).all()
    # irises: 468 is the subject's right eye (image left), 473 the left one, between the eye corners
    assert (pts[:, 468, 0] < pts[:, 473, 0]).all()
    assert (np.abs(pts[:, 468, :2] - 0.5 * (pts[:, 33, :2] + pts[:, 133, :2])) < 0.1 * SIZE).all()
    assert (np.abs(pts[:, 473, :2] - 0.5 * (pts[:, 263, :2] + pts[:, 362, :2])) < 0.1 * SIZE).all()


def test_masks_cover_the_rendered_head(one):
    r, cams, ex = one["renderer"], one["cams"], one["plan"]["expression"]
    with h5py.File(one["path"], "r") as f:
        head, person = f["masks/head"][...], f["masks/person"][...]
        pts = f["landmarks/points"][...]
    assert set(np.unique(head)) <= {0, 255} and set(np.unique(person)) <= {0, 255}
    assert ((head > 0) <= (person > 0)).all()  # head is a subset of person
    for k in range(0, N, 3):
        _, cover = r.render_with_mask(ex[k], cams[k])
        h = head[k] > 0
        # person = the rendered head mesh, the torso and the head mask (as in prep), no backdrop
        np.testing.assert_array_equal(person[k] > 0, cover | r.torso_mask | h)
        # the head mask is rendered head (plus at most a rim of the landmark hull's rounding)
        assert (h & ~cover).sum() <= 0.01 * h.sum()
        # every rendered head pixel above the jaw angles is in the head mask ...
        jaw = pts[k, list(JAW_LINE)]
        level = int(np.floor(min(jaw[3, 1], jaw[-4, 1])))
        above = cover.copy()
        above[level:] = False
        assert (above & ~h).sum() <= 0.005 * above.sum()
        # ... the neck below the chin is not (prep's head mask stops at the jaw line)
        chin = int(np.ceil(pts[k, 152, 1])) + 2
        assert not h[chin:].any()
        assert cover[chin:].any()
        # the whole face (the hull of the landmarks) is in it
        ij = np.clip(np.round(pts[k, :468, :2]).astype(int), 0, SIZE - 1)
        assert h[ij[:, 1], ij[:, 0]].mean() > 0.99


def test_the_store_path_imports_no_ffmpeg_mediapipe_or_soundfile(tmp_path):
    code = (
        "import sys\n"
        "for name in ('imageio_ffmpeg', 'mediapipe', 'soundfile'):\n"
        "    sys.modules[name] = None  # any import of them fails\n"
        "from minerf_cli.synth_store import synthesize_stores\n"
        f"s = synthesize_stores({str(tmp_path)!r}, ids=1, seconds=0.08, size=64)\n"
        "assert s[0]['frames'] == 2\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    assert (tmp_path / "synth_id00.h5").is_file()


def test_jpeg_and_parallel_stores_equal_serial_ones(cli_stores, tmp_path):
    # two jobs (processes) give the same stores as one; JPEG frames decode close to them
    par = synth_store.synthesize_stores(tmp_path / "par", ids=2, seconds=SECONDS, size=SIZE, seed=4, jobs=2,
                                  jpeg_quality=95)
    assert [Path(s["store"]).name for s in par] == ["synth_id00.h5", "synth_id01.h5"]
    for s in par:
        with store.open_store(Path(s["store"])) as fj, store.open_store(cli_stores / Path(s["store"]).name) as fl:
            assert store.FrameReader(fj).codec == store.JPEG and store.FrameReader(fl).codec == store.LOSSLESS
            a, b = store.FrameReader(fj)[0:N].astype(float), store.FrameReader(fl)[0:N].astype(float)
            assert np.abs(a - b).mean() < 2.0
            for name in ("tracking/camera_from_head", "tracking/expression", "landmarks/points", "masks/head"):
                np.testing.assert_array_equal(fj[name][...], fl[name][...])


def test_cli_store_refuses_and_forces(cli_stores):
    again = runner.invoke(app, ["synth", "-o", str(cli_stores), "--ids", "1", "--seconds", "0.08", "--size", "64",
                                "--store"])
    assert again.exit_code == 2 and again.stdout == "" and "--force" in again.stderr
    res = runner.invoke(app, ["synth", "-o", str(cli_stores.parent / "x"), "--jobs", "2"])
    assert res.exit_code == 2 and "--store" in res.stderr
    assert not [p for p in cli_stores.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_train_runs_on_two_synthetic_stores(cli_stores, tmp_path):
    run = tmp_path / "run"
    s = ok(runner.invoke(app, ["-q", "train", "--ids", str(cli_stores), "-o", str(run), *TINY_TRAIN,
                               "--steps", "2"]))
    assert s["steps"] == 2
    assert sorted(d["id"] for d in s["identities"]) == ["synth_id00", "synth_id01"]
    assert (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
