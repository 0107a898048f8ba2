"""`minerf lipsync` and joint driving (`transfer --audio`) on a tiny synthetic run (CPU)."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from minerf_cli.app import app
from minerf_cli.video import probe

runner = CliRunner()
TINY = ["--samples", "8:8", "--field-option", "width=32", "--field-option", "depth=4",
        "--field-option", "color_width=16", "--rays", "32", "--device", "cpu", "--test-frames", "1",
        "--val-every", "1000"]


N_TRAIN = 13  # training frames of a 15-frame clip (the last 2 are held out)


def _face_halves(mouth: list[int]) -> tuple[list[int], list[int]]:
    """Upper-face columns and the lower-face columns the audio model does not predict."""
    from minerf_cli.facemodel import load_face_model

    names = list(load_face_model().expression_names)
    lower = [k for k, n in enumerate(names) if n.startswith(("jaw", "mouth", "cheekPuff")) and k not in mouth]
    upper = [k for k in range(len(names)) if k not in lower and k not in mouth]
    assert "browDown_L" in [names[k] for k in upper] and "mouthLowerDown_L" in [names[k] for k in lower]
    return upper, lower


def ok(args):
    res = runner.invoke(app, ["-q", *map(str, args)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from minerf_cli.synth import synthesize

    d = tmp_path_factory.mktemp("lipsync")
    clips = synthesize(d / "syn", ids=2, seconds=0.6, size=128, fps=25.0, seed=21)
    stores = []
    for c in clips:
        out = d / (c["video"].rsplit("/", 1)[-1].replace(".mp4", ".h5"))
        ok(["prep", c["video"], "-o", out, "--size", "128"])
        ok(["fit3dmm", out])
        stores.append(out)
    ok(["train", "--ids", *stores, "-o", d / "run", "--steps", "2", *TINY])
    ok(["encode-audio", "--fit", *stores, "-o", d / "am", "--steps", "10"])
    # a speech of 0.73 s: not a whole number of 25 fps frames (18.25)
    speech = d / "speech.wav"
    pcm, rate = sf.read(clips[0]["audio"], dtype="float32")
    t = np.arange(int(0.73 * 16000)) / 16000
    sf.write(speech, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return {"dir": d, "stores": stores, "run": d / "run", "am": d / "am", "speech": speech, "wav": clips[0]["audio"]}


def test_lipsync_mp4_has_the_speech_and_its_length(setup, tmp_path):
    out = tmp_path / "dub.mp4"
    s = ok(["lipsync", setup["run"], "--id", "id01", "--audio", setup["speech"], "--audio-model", setup["am"],
            "-o", out, "--store", tmp_path / "dub.h5", "--device", "cpu"])
    assert s["frames"] == 19  # ceil(0.73 * 25): every frame the speech touches
    info = probe(out)
    assert info.has_audio and info.width == 128
    assert abs(info.duration - 0.73) < 1.0 / 25 + 1e-3  # equal to the speech's length within a frame
    assert abs(s["video_s"] - s["speech_s"]) < 1.0 / 25
    with h5py.File(tmp_path / "dub.h5") as f:
        assert f["frames"].shape[0] == 19
        req = f["render/expression"][...]
        pcm = f["audio/pcm"][...]
        target = f["render/target_frames"][...]
    assert len(pcm) == round(19 * 16000 / 25)
    # the clip has 15 frames: the 19 output frames walk 0..14 and back without a jump
    assert target.tolist()[:15] == list(range(15)) and target.tolist()[15:] == [13, 12, 11, 10]
    # mouth columns come from the audio model, the upper face from the clip's own tracking,
    # the rest of the lower face is the clip's mean (from the clip it would carry its mouth)
    with h5py.File(setup["stores"][1]) as f:
        tracked = f["tracking/expression"][...]
    own = tracked[target]
    am = json.loads((setup["am"] / "config.json").read_text())
    mouth = am["mouth_indices"]
    upper, lower = _face_halves(mouth)
    np.testing.assert_allclose(req[:, upper], own[:, upper], atol=1e-6)
    mean = tracked[: N_TRAIN].mean(0)
    np.testing.assert_allclose(req[:, lower], np.broadcast_to(mean[lower], (19, len(lower))), atol=1e-5)
    assert not np.allclose(req[:, mouth], own[:, mouth])


def test_joint_driving_takes_the_mouth_from_the_speech(setup, tmp_path):
    s = ok(["transfer", setup["run"], "--id", "id01", "--from", setup["stores"][0], "--audio", setup["speech"],
            "--audio-model", setup["am"], "--store", tmp_path / "joint.h5", "--device", "cpu"])
    assert s["audio_driven"] and s["mode"] == "transfer+audio"
    assert s["frames"] == 15  # the source's 15 frames (the speech covers 18)
    with h5py.File(tmp_path / "joint.h5") as f:
        req = f["render/expression"][...]
    with h5py.File(setup["stores"][0]) as f:
        src = f["tracking/expression"][...]
    mouth = json.loads((setup["am"] / "config.json").read_text())["mouth_indices"]
    upper, lower = _face_halves(mouth)
    np.testing.assert_allclose(req[:, upper], src[:15][:, upper], atol=1e-6)
    with h5py.File(setup["stores"][1]) as f:  # the rest of the lower face: the target's mean
        mean = f["tracking/expression"][...][: N_TRAIN].mean(0)
    np.testing.assert_allclose(req[:, lower], np.broadcast_to(mean[lower], (15, len(lower))), atol=1e-5)


def test_bad_speech_inputs(setup, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(100, 0.1, np.float32), 16000)
    base = ["-q", "lipsync", str(setup["run"]), "--id", "id01", "--audio-model", str(setup["am"]), "--device", "cpu"]
    for speech, words in ((silent, "silent"), (short, "too short"), (tmp_path / "none.wav", "")):
        res = runner.invoke(app, [*base, "--audio", str(speech), "-o", str(tmp_path / "x.mp4")])
        assert res.exit_code == 1, res.output
        assert words in res.output and res.output.count("error:") == 1
        assert not (tmp_path / "x.mp4").exists()
    res = runner.invoke(app, ["-q", "transfer", str(setup["run"]), "--id", "id01", "--from", str(setup["stores"][0]),
                              "--audio", str(setup["speech"]), "--store", str(tmp_path / "y.h5")])
    assert res.exit_code == 2 and "--audio-model" in res.output
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_latent_codes_mean_by_default_or_the_frames_own(setup, tmp_path):
    base = ["transfer", setup["run"], "--id", "id01", "--from", setup["stores"][1], "--frames", "0:3", "--device", "cpu"]
    ok([*base, "--store", tmp_path / "mean.h5"])
    ok([*base, "--store", tmp_path / "own.h5", "--latent", "frame"])
    with h5py.File(tmp_path / "mean.h5") as a, h5py.File(tmp_path / "own.h5") as b:
        fa, fb = a["frames"][...], b["frames"][...]
    assert fa.shape == fb.shape and not np.array_equal(fa, fb)  # training frames 0-2 have codes of their own
    res = runner.invoke(app, ["-q", *map(str, base), "--store", str(tmp_path / "x.h5"), "--latent", "own"])
    assert res.exit_code == 2 and "--latent" in res.output and "mean, frame" in res.output
    assert not (tmp_path / "x.h5").exists()
