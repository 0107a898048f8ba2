"""Audio features: log-mel against a direct computation, resampling, window alignment, `minerf encode-audio`."""

from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from minerf_cli import audio_windows as aw
from minerf_cli import mel, store
from minerf_cli.app import app
from minerf_cli.audio import load_audio, resample

runner = CliRunner()
SR = 16000


# --- log-mel -------------------------------------------------------------------------------

def _slaney_mel(f: float) -> float:
    return f * 3 / 200 if f < 1000 else 15 + 27 * math.log(f / 1000) / math.log(6.4)


def _slaney_hz(m: float) -> float:
    return m * 200 / 3 if m < 15 else 1000 * math.exp((m - 15) * math.log(6.4) / 27)


def _reference_logmel(x: np.ndarray) -> np.ndarray:
    """Loop-based: zero-pad 200 each side, frame j = [160 j, 160 j + 400), periodic Hann,
    direct DFT (explicit sum) of the 512-padded frame, triangular Slaney filters built point by point."""
    n_bins = 257
    freqs = [k * SR / 512 for k in range(n_bins)]
    lo_m, hi_m = _slaney_mel(0.0), _slaney_mel(8000.0)
    edges = [_slaney_hz(lo_m + (hi_m - lo_m) * i / 81) for i in range(82)]
    fb = np.zeros((80, n_bins))
    for b in range(80):
        left, centre, right = edges[b], edges[b + 1], edges[b + 2]
        for k, fk in enumerate(freqs):
            if left < fk <= centre:
                w = (fk - left) / (centre - left)
            elif centre < fk < right:
                w = (right - fk) / (right - centre)
            else:
                w = 0.0
            fb[b, k] = w * 2 / (right - left)
    padded = np.concatenate([np.zeros(200), x, np.zeros(600)])
    window = [0.5 - 0.5 * math.cos(2 * math.pi * i / 400) for i in range(400)]
    n_frames = 1 + len(x) // 160
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n_bins), np.arange(400)) / 512)  # 512-point DFT of a 400-sample frame
    out = np.zeros((n_frames, 80))
    for j in range(n_frames):
        seg = np.array([padded[160 * j + i] * window[i] for i in range(400)])
        power = np.abs(dft @ seg) ** 2
        out[j] = np.log(fb @ power + 1e-6)
    return out


def test_logmel_matches_a_direct_dft_and_filterbank():
    rng = np.random.default_rng(0)
    t = np.arange(3000) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    got = mel.logmel(x)
    ref = _reference_logmel(x)
    assert got.shape == ref.shape == (1 + 3000 // 160, 80)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_peaks_in_its_mel_band(freq):
    x = 0.5 * np.sin(2 * np.pi * freq * np.arange(SR) / SR)
    m = mel.logmel(x)
    centres = mel.mel_to_hz(np.linspace(mel.hz_to_mel(0), mel.hz_to_mel(8000), 82))[1:-1]
    expected = int(np.argmin(np.abs(centres - freq)))
    peaks = m[5:-5].argmax(axis=1)
    assert abs(int(np.median(peaks)) - expected) <= 1
    assert np.all(np.abs(peaks - expected) <= 1)


def test_silence_is_the_floor_and_frame_count():
    m = mel.logmel(np.zeros(1600))
    assert m.shape == (11, 80)
    np.testing.assert_allclose(m, mel.SILENCE_LOG, atol=1e-5)


# --- loading and resampling ----------------------------------------------------------------

@pytest.mark.parametrize("rate,fmt", [(44100, "wav"), (48000, "flac"), (22050, "wav")])
def test_stereo_file_is_resampled_to_16k_mono(tmp_path, rate, fmt):
    t = np.arange(int(1.5 * rate)) / rate
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    path = tmp_path / f"s.{fmt}"
    sf.write(path, stereo, rate)
    a = load_audio(path)
    assert a.rate == SR and a.source_rate == rate and a.channels == 2 and a.reader == "soundfile"
    assert a.pcm.ndim == 1 and a.pcm.dtype == np.float32
    assert len(a.pcm) == math.ceil(len(t) * SR / rate) == 24000
    spec = np.abs(np.fft.rfft(a.pcm[2000:-2000]))
    assert np.fft.rfftfreq(len(a.pcm) - 4000, 1 / SR)[spec.argmax()] == pytest.approx(440, abs=2)
    assert np.abs(a.pcm[2000:-2000]).max() == pytest.approx(0.2, abs=0.01)  # the mean of the channels


def test_resample_identity_and_ratio():
    x = np.random.default_rng(1).standard_normal(4410).astype(np.float32)
    assert resample(x, SR, SR) is not None and len(resample(x, SR, SR)) == 4410
    assert len(resample(x, 44100, SR)) == 1600


# --- window alignment ----------------------------------------------------------------------

def test_window_lengths():
    assert aw.window_steps(25) == 65 and aw.window_steps(30) == 55
    assert aw.window_steps(25, window_frames=8) == 33


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_window_of_frame_n_is_centred_on_n_over_fps(fps):
    seconds = 2.0
    x = np.zeros(int(seconds * SR))
    click_frame = 15 if fps == 30 else 13  # instants 0.5 s and 0.52 s: on the 10 ms grid
    t_click = click_frame / fps
    x[int(round(t_click * SR))] = 1.0
    m = mel.logmel(x)
    n = int(seconds * fps)
    win = aw.frame_windows(m, fps, 0, n)
    h = aw.half_steps(fps)
    assert win.shape == (n, 2 * h + 1, 80)
    energy = win.mean(axis=2)
    # the click's frame: the energy peak is the centre step, symmetric around it
    assert int(energy[click_frame].argmax()) == h
    np.testing.assert_allclose(energy[click_frame], energy[click_frame][::-1], atol=1e-5)
    # other frames: the peak sits at (t_click - n / fps) / hop from the centre
    for k in range(click_frame - 5, click_frame + 6):
        offset = (t_click - k / fps) / mel.HOP_S
        assert abs(int(energy[k].argmax()) - (h + offset)) <= 0.5 + 1e-6, (k, offset)


def test_off_grid_frames_are_interpolated_at_n_over_fps():
    rng = np.random.default_rng(2)
    m = rng.standard_normal((200, 80)).astype(np.float32)
    win = aw.frame_windows(m, 30.0, 0, 10)
    h = aw.half_steps(30.0)
    # frame 1 is at 1/30 s = 3.333 mel frames: 2/3 of frame 3 and 1/3 of frame 4
    np.testing.assert_allclose(win[1, h], (2 / 3) * m[3] + (1 / 3) * m[4], atol=1e-5)
    np.testing.assert_allclose(win[3, h], m[10], atol=1e-6)  # 0.1 s: on the grid
    # at 25 fps every frame is on the grid: exact copies
    w25 = aw.frame_windows(m, 25.0, 0, 10)
    h25 = aw.half_steps(25.0)
    np.testing.assert_array_equal(w25[2, h25 - 3:h25 + 4], m[8 - 3:8 + 4])


def test_clip_ends_are_padded_with_silence():
    m = np.zeros((50, 80), np.float32)
    win = aw.frame_windows(m, 25.0, 0, 12)
    h = aw.half_steps(25.0)
    np.testing.assert_array_equal(win[0, :h], mel.SILENCE_LOG)
    np.testing.assert_array_equal(win[0, h:h + 50], 0.0)
    np.testing.assert_array_equal(win[11, h + 6:], mel.SILENCE_LOG)  # 11/25 s = frame 44; mel ends at 49


def test_blocks_equal_one_pass():
    m = np.random.default_rng(3).standard_normal((300, 80)).astype(np.float32)
    whole = aw.frame_windows(m, 30.0, 0, 90)
    np.testing.assert_array_equal(np.concatenate([aw.frame_windows(m, 30.0, 0, 37),
                                                  aw.frame_windows(m, 30.0, 37, 90)]), whole)


# --- the command ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepped(synth_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "clip.h5"
    res = runner.invoke(app, ["-q", "prep", synth_clip["video"], "-o", str(out), "--size", "128"])
    assert res.exit_code == 0, res.output
    return out


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_encode_audio_on_a_store(prepped, tmp_path):
    path = tmp_path / "clip.h5"
    shutil.copy(prepped, path)
    res = runner.invoke(app, ["encode-audio", str(path)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    with store.open_store(path, require=("audio_features",)) as f:
        n = f["frames"].shape[0]
        fps = float(f["frames"].attrs["fps"])
        feats = f["audio_features/features"][()]
        attrs = dict(f["audio_features"].attrs)
        pcm = f["audio/pcm"][()]
    assert summary["frames"] == n and summary["features_shape"] == [n, 65, 80] and fps == 25.0
    assert feats.shape == (n, 65, 80) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert attrs["kind"] == "logmel80" and attrs["window_frames"] == 16 and attrs["hop_s"] == pytest.approx(0.01)
    np.testing.assert_allclose(feats, aw.frame_windows(mel.logmel(pcm), fps, 0, n), atol=1e-5)
    assert feats.std() > 0.5  # speech, not silence
    # again: needs --force; --fps is refused for a store
    res = runner.invoke(app, ["encode-audio", str(path)])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["encode-audio", str(path), "--fps", "30"])
    assert res.exit_code == 2 and "--fps" in res.output
    res = runner.invoke(app, ["encode-audio", str(path), "--force", "--window-frames", "8"])
    assert res.exit_code == 0, res.output
    with h5py.File(path) as f:
        assert f["audio_features/features"].shape == (n, 33, 80)


def test_store_without_audio_is_refused(prepped, tmp_path):
    path = tmp_path / "mute.h5"
    shutil.copy(prepped, path)
    with h5py.File(path, "r+") as f:
        del f["audio"]
    res = runner.invoke(app, ["encode-audio", str(path)])
    assert res.exit_code == 1 and "no audio track" in res.output
    with h5py.File(path) as f:
        assert "audio_features" not in f


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_encode_audio_on_a_bare_wav(synth_clip, tmp_path, fps):
    out = tmp_path / "feats.h5"
    res = runner.invoke(app, ["encode-audio", synth_clip["audio"], "--fps", str(fps), "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    src, rate = sf.read(synth_clip["audio"])
    n = math.floor(len(src) / rate * fps + 1e-6)
    t = aw.window_steps(fps)
    with store.open_store(out, require=("audio", "audio_features")) as f:
        assert "frames" not in f
        assert f["audio_features/features"].shape == (n, t, 80)
        assert len(f["audio/pcm"]) == round(n / fps * SR)
        assert f["audio"].attrs["sample_rate"] == SR and f["audio_features"].attrs["fps"] == fps
        assert f.attrs["source_sha256"]
    assert summary["frames"] == n and summary["output"] == str(out)
    assert _files(tmp_path) == ["feats.h5"]
    # composes with info
    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0, res.output


def test_encode_audio_reads_the_audio_of_an_mp4(synth_clip, tmp_path):
    out = tmp_path / "v.h5"
    res = runner.invoke(app, ["encode-audio", synth_clip["video"], "--fps", "25", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["reader"] == "ffmpeg"
    with store.open_store(out, require=("audio_features",)) as f:
        assert f["audio_features/features"].shape[1:] == (65, 80)


def _wav(path, x, rate=SR):
    sf.write(path, x, rate)
    return str(path)


def test_bad_inputs_give_clear_errors(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    speech = 0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)

    def run(*args):
        return runner.invoke(app, ["encode-audio", *args])

    res = run(str(d / "missing.wav"), "--fps", "25", "-o", str(out / "a.h5"))
    assert res.exit_code == 1 and "not found" in res.output
    (d / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    res = run(str(d / "junk.wav"), "--fps", "25", "-o", str(out / "a.h5"))
    assert res.exit_code == 1 and "junk.wav" in res.output and "Traceback" not in res.output
    short = _wav(d / "short.wav", speech[:300])
    res = run(short, "--fps", "25", "-o", str(out / "a.h5"))
    assert res.exit_code == 1 and "too short" in res.output
    silent = _wav(d / "silent.wav", np.zeros(SR))
    res = run(silent, "--fps", "25", "-o", str(out / "a.h5"))
    assert res.exit_code == 1 and "silent" in res.output and "--allow-silence" in res.output
    ok = _wav(d / "ok.wav", speech)
    for fps in ("0", "-5", "1000", "nan"):
        res = run(ok, "--fps", fps, "-o", str(out / "a.h5"))
        assert res.exit_code == 2 and "--fps" in res.output, (fps, res.output)
    res = run(ok, "-o", str(out / "a.h5"))
    assert res.exit_code == 2 and "--fps" in res.output
    res = run(ok, "--fps", "25")
    assert res.exit_code == 2 and "-o" in res.output
    assert _files(out) == []  # nothing left behind
    # silence allowed on request (with a warning); clipping is a warning
    res = run(silent, "--fps", "25", "-o", str(out / "s.h5"), "--allow-silence")
    assert res.exit_code == 0 and "silent" in res.output
    clipped = _wav(d / "clipped.wav", np.clip(6 * speech, -1, 1))
    res = run(clipped, "--fps", "25", "-o", str(out / "c.h5"))
    assert res.exit_code == 0 and "clipped" in res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["warnings"]
    res = run(ok, "--fps", "25", "-o", str(out / "c.h5"))
    assert res.exit_code == 2 and "--force" in res.output
    assert _files(out) == ["c.h5", "s.h5"]


def test_video_without_audio_has_no_audio_stream(tmp_path):
    from minerf_cli.video import write_video

    video = tmp_path / "mute.mp4"
    write_video(video, [np.zeros((32, 32, 3), np.uint8)] * 10, 25.0)
    res = runner.invoke(app, ["encode-audio", str(video), "--fps", "25", "-o", str(tmp_path / "a.h5")])
    assert res.exit_code == 1 and "no audio stream" in res.output
    assert _files(tmp_path) == ["mute.mp4"]


@pytest.mark.parametrize("subtype,channels", [("PCM_16", 1), ("PCM_24", 2), ("FLOAT", 1), ("PCM_U8", 1)])
def test_wav_fallback_without_soundfile(tmp_path, monkeypatch, subtype, channels):
    """Plain PCM wav loads without soundfile (the GPU image lacks it): same samples."""
    import sys

    import soundfile as sf

    from minerf_cli.audio import load_audio, read_wav_fallback

    t = np.arange(4410) / 22050
    x = 0.5 * np.sin(2 * np.pi * 300 * t)[:, None] * np.ones((1, channels))
    p = tmp_path / "a.wav"
    sf.write(p, x.astype(np.float32), 22050, subtype=subtype)
    ref, rate = sf.read(p, dtype="float32", always_2d=True)
    got, rate2 = read_wav_fallback(p)
    assert rate2 == rate and got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-2
    want = load_audio(p).pcm
    monkeypatch.setitem(sys.modules, "soundfile", None)
    a = load_audio(p)
    assert a.reader == "wavfile" and np.abs(a.pcm - want).max() < 1e-2
