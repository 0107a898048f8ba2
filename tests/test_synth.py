"""Synthetic talking heads: files, ground truth, audio-driven jaw, determinism, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from minerf_cli import raster, synth, synth_audio
from minerf_cli.app import app
from minerf_cli.facemodel import load_face_model
from minerf_cli.synth_head import NECK_BLEND_Y, USED_EXPRESSIONS, HeadRenderer, topology
from minerf_cli.video import probe, read_frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return synth.synthesize_clip(out / "a", identity_seed=3, seconds=0.5, size=128, fps=25)


def test_tiny_clip_files(clip):
    assert clip["frames"] == 12
    info = probe(clip["video"])
    assert (info.width, info.height, info.fps) == (128, 128, 25.0)
    assert info.has_audio and info.codec == "h264"
    pcm, rate = sf.read(clip["audio"])
    assert rate == 16000 and pcm.ndim == 1 and len(pcm) == 12 * 640  # 12 frames of 40 ms
    assert np.abs(pcm).max() > 0.05
    frames = list(read_frames(clip["video"]))
    assert len(frames) == 12
    assert frames[0].std() > 10  # not a blank frame


def test_ground_truth_shapes_and_conventions(clip):
    gt = np.load(clip["gt"])
    n = clip["frames"]
    assert gt["camera_from_head"].shape == (n, 4, 4) and gt["camera_from_head"].dtype == np.float32
    assert gt["intrinsics"].shape == (3, 3)
    assert gt["expression"].shape == (n, 53) and len(gt["expression_names"]) == 53
    assert gt["identity"].shape == (100,)
    assert gt["yaw_pitch_roll_deg"].shape == (n, 3)
    assert float(gt["fps"]) == 25.0 and int(gt["size"]) == 128
    assert "OpenCV" in str(gt["README"])
    K = gt["intrinsics"]
    np.testing.assert_allclose(K[:2, 2], [64, 64])
    assert 1.6 * 128 <= K[0, 0] <= 2.2 * 128
    # rotations are proper, and a zero pose is diag(1, -1, -1)
    R = gt["camera_from_head"][:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-4)
    ypr = gt["yaw_pitch_roll_deg"]
    assert (np.abs(ypr) <= [20, 10, 5]).all()
    R0 = synth.rotation_ypr(0, 0, 0)
    np.testing.assert_allclose(synth.camera_from_head(R0, np.zeros(3), np.zeros(3))[:3, :3], np.diag([1, -1, -1]))
    # the face is where the pose says: the projected nose tip is inside the frame, above the middle
    m = load_face_model()
    v = m.vertices(gt["identity"], gt["expression"][0])
    nose = raster.project(raster.transform(v[m.landmarks68[30:31]], gt["camera_from_head"][0]), K)[0]
    assert 20 < nose[0] < 108 and 20 < nose[1] < 80


def test_ground_truth_is_the_rendered_geometry(clip):
    gt = np.load(clip["gt"])
    plan = synth.clip_plan(identity_seed=3, seconds=0.5, size=128)  # the fixture's clip
    np.testing.assert_array_equal(plan["look"].identity, gt["identity"])
    r = HeadRenderer(plan["look"], 128)
    k = 5
    ex, M = gt["expression"][k], gt["camera_from_head"][k]
    _, vc = r.camera_vertices(ex, M)
    m = load_face_model()
    expect = raster.transform(m.vertices(gt["identity"], ex), M)
    rigid = r.v_id[:, 1] > NECK_BLEND_Y  # the neck below blends into the torso
    assert rigid.mean() > 0.8
    np.testing.assert_allclose(vc[: len(expect)][rigid], expect[rigid], atol=2e-3)
    decoded = list(read_frames(clip["video"]))[k].astype(np.float64)
    assert np.abs(decoded - r.render(ex, M)).mean() < 4.0  # H.264 at crf 18


def test_jaw_follows_the_audio_envelope():
    plan = synth.clip_plan(identity_seed=5, seconds=8.0, size=64)
    names = load_face_model().expression_names
    jaw = plan["expression"][:, names.index("jawOpen")]
    rms = synth_audio.frame_rms(plan["speech"].pcm, 16000, 25.0, plan["n"])
    assert np.corrcoef(jaw, rms)[0, 1] > 0.5
    assert 0 <= jaw.min() and jaw.max() <= 0.7 + 1e-6 and jaw.max() > 0.3
    ex = plan["expression"]
    blink = ex[:, names.index("eyeBlink_L")]
    assert blink.max() > 0.5 and np.array_equal(blink, ex[:, names.index("eyeBlink_R")])
    used = {names[i] for i in np.flatnonzero(np.abs(ex).max(0) > 0)}
    assert "jawOpen" in used and used <= set(USED_EXPRESSIONS)


def test_plans_and_frames_are_deterministic():
    a = synth.clip_plan(11, 1.0, 64)
    b = synth.clip_plan(11, 1.0, 64)
    c = synth.clip_plan(12, 1.0, 64)
    assert np.array_equal(a["expression"], b["expression"]) and np.array_equal(a["speech"].pcm, b["speech"].pcm)
    assert not np.array_equal(a["look"].identity, c["look"].identity)
    fa = next(synth.render_frames(a))
    fb = next(synth.render_frames(b))
    assert np.array_equal(fa, fb)


def test_holes_are_filled_front_facing():
    top = topology()
    assert [f.name for f in top.fills] == ["eye_R", "eye_L", "mouth"]
    # a frontal neutral render shows the eye fills (not the background through the holes)
    look = synth.random_look(np.random.default_rng(0))
    r = HeadRenderer(look, 96)
    vh = r.head_vertices(np.zeros(53))
    M = synth.camera_from_head(np.eye(3), np.zeros(3), r.t_cam)
    px = raster.project(raster.transform(vh, M), r.K)
    tid, _ = raster.rasterize(px, top.tris, 96, 96)
    s, e = top.fill_tri_ranges["eye_L"]
    assert ((tid >= s) & (tid < e)).sum() > 5


def test_cli_writes_clips_and_prints_one_json(tmp_path):
    out = tmp_path / "clips"
    res = CliRunner().invoke(app, ["synth", "-o", str(out), "--ids", "2", "--seconds", "0.2", "--size", "64"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["output"] == str(out) and len(summary["clips"]) == 2
    for c in summary["clips"]:
        assert c["frames"] == 5
        for key in ("video", "audio", "gt"):
            assert (out / c[key].split("/")[-1]).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    again = CliRunner().invoke(app, ["synth", "-o", str(out), "--ids", "1", "--seconds", "0.2", "--size", "64"])
    assert again.exit_code == 2 and again.stdout == ""
    assert "--force" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    forced = CliRunner().invoke(app, ["synth", "-o", str(out), "--ids", "1", "--seconds", "0.2", "--size", "64",
                                      "--force"])
    assert forced.exit_code == 0, forced.stderr


def test_cli_rejects_bad_arguments(tmp_path):
    res = CliRunner().invoke(app, ["synth", "-o", str(tmp_path / "x"), "--ids", "0"])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["synth", "-o", str(tmp_path / "no" / "such" / "x")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
