"""`minerf encode-audio --fit`: a tiny audio model on 2 synthetic tracked stores, AudioBundle's API."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli.app import app
from minerf_cli.audio_model.bundle import AudioBundle
from minerf_cli.errors import FormatError
from minerf_cli.facemodel import MOUTH_SET, load_face_model

runner = CliRunner()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from minerf_cli.synth import synthesize

    root = tmp_path_factory.mktemp("audio_fit")
    clips = synthesize(root / "videos", ids=2, seconds=1.0, size=128, fps=25.0, seed=11)
    out = []
    for i, clip in enumerate(clips):
        path = root / f"id{i}.h5"
        res = runner.invoke(app, ["-q", "prep", clip["video"], "-o", str(path), "--size", "128"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["-q", "fit3dmm", str(path)])
        assert res.exit_code == 0, res.output
        out.append(path)
    return out


@pytest.fixture(scope="module")
def fitted(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "audio_model"
    res = runner.invoke(app, ["-q", "encode-audio", "--fit", *map(str, stores), "-o", str(out), "--steps", "60"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_fit_summary_and_losses_decrease(fitted):
    out, summary = fitted
    assert summary["output"] == str(out) and summary["clips"] == 2
    assert summary["test_frames"] == 2 * round(25 * 0.1) and summary["train_frames"] + summary["test_frames"] == 50
    for key in ("autoencoder", "infonce", "expression_mse"):
        loss = summary["losses"][key]
        assert loss["last"] < loss["first"], (key, loss)
    held = summary["heldout"]
    assert list(held["correlation"])[0] == "jawOpen" and set(held["correlation"]) == set(MOUTH_SET)
    acc = held["infonce_accuracy"]  # None here: 3 held-out frames per clip leave no negative min_gap away
    assert acc is None or 0.0 <= acc <= 1.0
    assert len(held["per_clip"]) == 2 and len(held["sync_offsets"]) == 2
    assert (out / "config.json").is_file() and (out / "weights.pt").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "minerf-audio-model" and cfg["version"] == 1
    assert cfg["training"]["losses"] == summary["losses"]


def test_bundle_api_shapes(fitted, stores):
    out, _ = fitted
    b = AudioBundle.load(out)
    names = load_face_model().expression_names
    assert b.mouth_names == list(MOUTH_SET) and [names[i] for i in b.mouth_indices] == b.mouth_names
    assert b.window_frames == 8 and b.window_steps == 33 and b.window_seconds == 0.32
    with h5py.File(stores[0]) as f:
        pcm = f["audio/pcm"][()]
        fps = float(f["frames"].attrs["fps"])
        lm = f["landmarks/points"][()]
    n = len(lm)
    w = b.windows(pcm, fps)
    assert w.shape == (n, 33, 80) and w.dtype == np.float32
    assert b.windows(pcm, fps, n_frames=7).shape == (7, 33, 80)
    assert b.windows(pcm, 30.0).shape[1:] == (33, 80)  # the same T at any frame rate
    a = b.audio_embedding(w)
    assert a.shape == (n, 64) and np.isfinite(a).all()
    lm2 = lm.copy()
    lm2[3] = np.nan
    m = b.mouth_embedding(lm2)
    assert m.shape == (n, 64) and np.isnan(m[3]).all() and np.isfinite(np.delete(m, 3, 0)).all()
    for smooth in (True, False):
        p = b.predict_expressions(w, smooth=smooth)
        assert p.shape == (n, len(MOUTH_SET)) and p.min() >= 0 and p.max() <= 1
    s = b.sync(pcm, fps, lm, max_offset=5)
    assert isinstance(s["offset"], int) and -5 <= s["offset"] <= 5 and s["confidence"] >= 0
    assert len(s["offsets"]) == len(s["similarity"]) == 11
    with pytest.raises(ValueError):
        b.audio_embedding(np.zeros((2, 55, 80), np.float32))
    # through the CLI
    res = runner.invoke(app, ["-q", "encode-audio", str(stores[0]), "--model", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["frames"] == n


def test_save_reload_roundtrip_and_force(fitted, tmp_path):
    out, _ = fitted
    b = AudioBundle.load(out)
    w = np.random.default_rng(0).normal(0, 1, (4, b.window_steps, 80)).astype(np.float32)
    copy = tmp_path / "copy"
    b.save(copy)
    b2 = AudioBundle.load(copy)
    np.testing.assert_allclose(b.audio_embedding(w), b2.audio_embedding(w), atol=1e-6)
    np.testing.assert_allclose(b.predict_expressions(w), b2.predict_expressions(w), atol=1e-6)
    with pytest.raises(Exception) as exc:
        b.save(copy)
    assert getattr(exc.value, "exit_code", None) == 2
    b.save(copy, force=True)


def test_newer_or_wrong_bundle_is_refused(fitted, stores, tmp_path):
    out, _ = fitted
    bad = tmp_path / "v99"
    shutil.copytree(out, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["version"] = 99
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError):
        AudioBundle.load(bad)
    res = runner.invoke(app, ["encode-audio", str(stores[0]), "--model", str(bad)])
    assert res.exit_code == 3 and "newer" in res.output
    (bad / "config.json").write_text(json.dumps({**cfg, "version": 1, "format": "something-else"}))
    assert runner.invoke(app, ["encode-audio", str(stores[0]), "--model", str(bad)]).exit_code == 3
    (bad / "config.json").write_text(json.dumps({**cfg, "version": 1}))
    (bad / "weights.pt").write_bytes(b"junk")
    assert runner.invoke(app, ["encode-audio", str(stores[0]), "--model", str(bad)]).exit_code == 3


def test_fit_needs_audio_and_tracking(stores, tmp_path):
    no_audio = tmp_path / "no_audio.h5"
    shutil.copy(stores[0], no_audio)
    with h5py.File(no_audio, "r+") as f:
        del f["audio"]
    res = runner.invoke(app, ["encode-audio", "--fit", str(no_audio), str(stores[1]), "-o", str(tmp_path / "m1")])
    assert res.exit_code != 0 and "no /audio" in res.output
    no_track = tmp_path / "no_track.h5"
    shutil.copy(stores[0], no_track)
    with h5py.File(no_track, "r+") as f:
        del f["tracking"]
    res = runner.invoke(app, ["encode-audio", "--fit", str(no_track), "-o", str(tmp_path / "m2")])
    assert res.exit_code != 0 and "no /tracking" in res.output and "fit3dmm" in res.output
    assert not (tmp_path / "m1").exists() or not any((tmp_path / "m1").iterdir())
    res = runner.invoke(app, ["encode-audio", "--fit", str(stores[0])])
    assert res.exit_code == 2 and "-o" in res.output
    res = runner.invoke(app, ["encode-audio", str(stores[0]), str(stores[1])])
    assert res.exit_code == 2


def test_residual_model_identity_means_and_clip_norm(fitted, stores):
    """New bundles: per-clip mel normalisation, residual expression targets with per-store means."""
    out, summary = fitted
    b = AudioBundle.load(out)
    assert b.residual and b.config["features"]["mel_norm"] == "clip"
    assert set(b.identity_names) >= {s.stem for s in stores}
    with h5py.File(stores[0]) as f:
        pcm = f["audio/pcm"][()]
        fps = float(f["frames"].attrs["fps"])
    w = b.windows(pcm, fps)
    # clip normalisation: every mel band is about zero-mean over the clip
    assert np.abs(w[:, w.shape[1] // 2].mean(0)).max() < 0.5
    g = b.predict_expressions(w, smooth=False)
    a = b.predict_expressions(w, smooth=False, identity=stores[0].stem)
    shift = b.expression_mean(stores[0].stem) - b.expression_mean(None)
    inside = (g > 1e-3) & (g < 1 - 1e-3) & (a > 1e-3) & (a < 1 - 1e-3)
    np.testing.assert_allclose((a - g)[inside], np.broadcast_to(shift, a.shape)[inside], atol=1e-5)
    m = np.full(len(b.mouth_names), 0.5, np.float32)
    assert b.predict_expressions(w, mean=m).shape == g.shape
    with pytest.raises(Exception) as exc:
        b.predict_expressions(w, identity="nobody")
    assert getattr(exc.value, "exit_code", None) == 2
    held = summary["heldout"]
    assert "sync_offsets_shift10" in held and len(held["sync_shift10_recovered"]) == 2
