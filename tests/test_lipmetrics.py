"""Lip metrics: M-LMD, SyncNet (architecture, loading, MFCC, LSE) and their `minerf evaluate` wiring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import lipmetrics, syncnet
from minerf_cli.app import app
from minerf_cli.errors import FormatError, MinerfError

torch = pytest.importorskip("torch")
runner = CliRunner()
N = 8  # frames of the synthetic clip (0.32 s at 25 fps)


# ----------------------------------------------------------------------------- M-LMD

def _face(iod: float) -> np.ndarray:
    lm = np.random.default_rng(1).uniform(0, 50, (478, 3)).astype(np.float32)
    lm[33, :2] = (10.0, 20.0)
    lm[263, :2] = (10.0 + iod, 20.0)
    return lm


def test_m_lmd_by_hand():
    ref = np.stack([_face(10.0), _face(20.0), _face(10.0), _face(10.0)])
    gen = ref.copy()
    mouth = list(lipmetrics.MOUTH_LANDMARKS)
    assert len(mouth) == 40 and 61 in mouth and 291 in mouth and 13 in mouth and 14 in mouth
    gen[0, mouth, :2] += (3.0, 4.0)  # every lip point 5 px away; iod 10 -> 0.5
    gen[1, mouth[:20], 1] += 2.0  # half the lip points 2 px away: 1 px mean; iod 20 -> 0.05
    gen[1, 100, :2] += 50.0  # not a lip point: no effect
    gen[0, mouth, 2] += 100.0  # z is left out
    gen[2] = np.nan  # no face in the generated frame
    ref[3, 5, 0] = np.nan  # no face in the reference frame
    r = lipmetrics.mouth_lmd(gen, ref)
    assert r.frames == 2 and r.skipped == 2
    assert r.value == pytest.approx((0.5 + 0.05) / 2)
    assert r.value_px == pytest.approx((5.0 + 1.0) / 2)
    assert np.isnan(r.per_frame[2:]).all() and r.per_frame[:2] == pytest.approx([0.5, 0.05])
    assert lipmetrics.m_lmd(gen, ref) == pytest.approx(0.275)
    assert lipmetrics.m_lmd(ref[:2], ref[:2]) == 0.0
    assert math.isnan(lipmetrics.m_lmd(gen[2:3], ref[2:3]))
    with pytest.raises(ValueError):
        lipmetrics.m_lmd(gen[:2], ref[:3])


# ----------------------------------------------------------------------------- MFCC

def _mfcc_direct(x: np.ndarray, rate: int = 16000) -> np.ndarray:
    """python_speech_features.mfcc's defaults written out frame by frame (explicit DFT and DCT)."""
    x = np.asarray(x, np.float64)
    y = np.concatenate([[x[0]], x[1:] - 0.97 * x[:-1]])
    n_frames = 1 + int(math.ceil((len(y) - 400) / 160))
    y = np.concatenate([y, np.zeros((n_frames - 1) * 160 + 400 - len(y))])
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    imel = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    bins = np.floor(513 * imel(np.linspace(mel(0), mel(rate / 2), 28)) / rate)
    k = np.arange(257)
    fb = np.zeros((26, 257))
    for j in range(26):
        up = (k >= bins[j]) & (k < bins[j + 1])
        down = (k >= bins[j + 1]) & (k < bins[j + 2])
        fb[j, up] = (k[up] - bins[j]) / (bins[j + 1] - bins[j])
        fb[j, down] = (bins[j + 2] - k[down]) / (bins[j + 2] - bins[j + 1])
    dft = np.exp(-2j * np.pi * np.outer(k, np.arange(400)) / 512)  # 512-point DFT of 400 samples
    n = np.arange(26)
    out = []
    for t in range(n_frames):
        frame = y[t * 160:t * 160 + 400]
        power = np.abs(dft @ frame) ** 2 / 512
        logmel = np.log(fb @ power)
        cep = np.array([np.sqrt((1 if q == 0 else 2) / 26) * np.sum(logmel * np.cos(np.pi * q * (2 * n + 1) / 52))
                        for q in range(13)])
        cep *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
        cep[0] = np.log(power.sum())
        out.append(cep)
    return np.array(out)


def test_mfcc_matches_a_direct_computation_on_a_tone():
    t = np.arange(int(0.33 * 16000)) / 16000
    tone = syncnet.pcm_to_int16_scale(0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 2500 * t))
    ours = syncnet.mfcc(tone)
    assert ours.shape == (1 + math.ceil((len(tone) - 400) / 160), 13)
    np.testing.assert_allclose(ours, _mfcc_direct(tone), rtol=1e-7, atol=1e-7)
    assert syncnet.mfcc(np.zeros(100)).shape == (1, 13)  # shorter than a window: one padded frame
    assert syncnet.hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2))


# ----------------------------------------------------------------------------- SyncNet

def _weights(path: Path, seed: int = 0, **changes) -> Path:
    """A SyncNet state dict with syncnet_python's keys and random values (and random BatchNorm
    statistics: a "trained-looking" file; this tests the plumbing, not SyncNet's values)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in syncnet.syncnet_state_dict_template().items():
        if k.endswith("num_batches_tracked"):
            continue  # syncnet_v2.model predates them
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif v.ndim > 1:
            sd[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        else:
            sd[k] = torch.randn(v.shape, generator=g) * 0.1 + (1.0 if k.endswith(".weight") else 0.0)
    sd.update(changes)
    torch.save(sd, path)
    return path


def test_syncnet_keys_and_shapes_are_syncnet_pythons():
    sd = syncnet.syncnet_state_dict_template()
    assert tuple(sd["netcnnlip.0.weight"].shape) == (96, 3, 5, 7, 7)
    assert tuple(sd["netcnnaud.0.weight"].shape) == (64, 1, 3, 3)
    assert tuple(sd["netcnnaud.18.weight"].shape) == (512, 256, 5, 4)
    assert tuple(sd["netcnnlip.18.weight"].shape) == (512, 256, 1, 6, 6)
    assert tuple(sd["netfcaud.3.weight"].shape) == (1024, 512) and "netfclip.1.running_var" in sd


def test_syncnet_loads_user_weights_and_scores(tmp_path):
    net = syncnet.load_syncnet(_weights(tmp_path / "syncnet_v2.model"))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (9, 224, 224, 3), dtype=np.uint8)
    pcm = 0.1 * rng.standard_normal(9 * 640).astype(np.float32)
    r = syncnet.lse(net, crops, pcm)
    assert r.windows == 4 and -15 <= r.offset <= 15 and len(r.mean_dist) == 31
    assert math.isfinite(r.lse_d) and r.lse_d > 0 and math.isfinite(r.lse_c) and r.lse_c >= 0
    # a "__S__." prefix (SyncNetInstance's own state dict) loads too
    sd = torch.load(tmp_path / "syncnet_v2.model", weights_only=True)
    torch.save({f"__S__.{k}": v for k, v in sd.items()}, tmp_path / "instance.pth")
    syncnet.load_syncnet(tmp_path / "instance.pth")
    with pytest.raises(MinerfError, match="at least 6 frames"):
        syncnet.lse(net, crops[:5], pcm)


def test_syncnet_refuses_wrong_files(tmp_path):
    sd = torch.load(_weights(tmp_path / "ok.pth"), weights_only=True)
    cases = {
        "missing.pth": {k: v for k, v in sd.items() if not k.startswith("netfclip")},
        "renamed.pth": {k.replace("netcnnaud", "audio"): v for k, v in sd.items()},
        "shape.pth": {**sd, "netcnnlip.0.weight": torch.zeros(96, 1, 5, 7, 7)},  # grey input: not v2
    }
    for name, bad in cases.items():
        torch.save(bad, tmp_path / name)
        with pytest.raises(FormatError, match=name):
            syncnet.load_syncnet(tmp_path / name)
    torch.save(syncnet.syncnet_state_dict_template(), tmp_path / "fresh.pth")  # an untrained network
    with pytest.raises(FormatError, match="untrained"):
        syncnet.load_syncnet(tmp_path / "fresh.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(FormatError, match="junk.pth"):
        syncnet.load_syncnet(tmp_path / "junk.pth")
    with pytest.raises(MinerfError, match="not found"):
        syncnet.load_syncnet(tmp_path / "nope.model")


def test_face_crop_geometry():
    """syncnet_python's crop: rows cy - s .. cy + 1.8 s, columns cx - 1.4 s .. cx + 1.4 s, grey 110 outside."""
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[50:, :, 0] = 255  # red lower half (RGB)
    crop = syncnet.face_crop(frame, 50.0, 40.0, 20.0)  # rows 20..76, columns 22..78
    assert crop.shape == (224, 224, 3)
    assert crop[10, 112].tolist() == [0, 0, 0] and crop[200, 112].tolist() == [0, 0, 255]  # BGR
    corner = syncnet.face_crop(frame, 5.0, 5.0, 20.0)
    assert corner[0, 0].tolist() == [110, 110, 110]
    lm = np.full((3, 478, 3), np.nan)
    lm[1, :, :2] = np.random.default_rng(0).uniform(30, 70, (478, 2))
    params = syncnet.crop_params(lm)
    assert np.allclose(params, params[1]) and params[1][2] == pytest.approx(np.ptp(lm[1, :, :2], axis=0).max() / 2)
    with pytest.raises(MinerfError, match="no face"):
        syncnet.crop_params(np.full((2, 478, 3), np.nan))


# ----------------------------------------------------------------------------- `minerf evaluate`

def evaluate(*args) -> tuple[int, dict | None, str]:
    res = runner.invoke(app, ["-q", "evaluate", *map(str, args)])
    out = json.loads(res.stdout) if res.exit_code == 0 else None
    return res.exit_code, out, res.stderr


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    pytest.importorskip("dlib")
    from minerf_cli.synth import synthesize

    root = Path(tmp_path_factory.mktemp("lips"))
    made = synthesize(root / "synth", ids=1, seconds=N / 25.0, size=256, fps=25.0, seed=0)[0]
    store = root / "id00.h5"
    res = runner.invoke(app, ["-q", "prep", made["video"], "-o", str(store), "--size", "256"])
    assert res.exit_code == 0, res.output
    with h5py.File(store) as f:
        frames, lm = f["frames"][...], f["landmarks/points"][...]
        assert "audio/pcm" in f
    return {"root": root, "store": store, "video": Path(made["video"]), "wav": Path(made["audio"]),
            "frames": frames, "landmarks": lm}


def _write_pngs(directory: Path, frames) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(directory / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return directory


def _shift_mouth(frame: np.ndarray, lm: np.ndarray, dy: int) -> np.ndarray:
    """Move the mouth region (the lips' box, padded) dy pixels down."""
    pts = lm[list(lipmetrics.MOUTH_LANDMARKS), :2]
    x0, y0 = (pts.min(0) - 6).astype(int)
    x1, y1 = (pts.max(0) + 6).astype(int)
    out = frame.copy()
    out[y0 + dy:y1 + dy, x0:x1] = frame[y0:y1, x0:x1]
    return out


def test_m_lmd_in_evaluate(clip):
    code, same, err = evaluate(clip["store"], "--ref", clip["store"], "--identity-frames", 1)
    assert code == 0, err
    assert same["m_lmd"] == pytest.approx(0.0, abs=1e-6) and same["m_lmd_frames"] == N
    assert same["m_lmd_frames_skipped"] == 0 and "inter-ocular" in same["m_lmd_normaliser"]
    assert same["lse_d"] == "skipped: no SyncNet weights (--syncnet)" and same["lse_c"].startswith("skipped")
    assert same["minerf_sync_confidence"].startswith("skipped: no minerf audio model")
    shifted = _write_pngs(clip["root"] / "shifted",
                          [_shift_mouth(f, lm, 5) for f, lm in zip(clip["frames"], clip["landmarks"])])
    code, out, err = evaluate(shifted, "--ref", clip["store"], "--identity-frames", 1)
    assert code == 0, err
    assert out["m_lmd"] > 0.02 and out["m_lmd_px"] > 1.0 and out["m_lmd_frames"] == N
    code, out, err = evaluate(clip["store"], "--ref", clip["store"], "--identity-only", "--identity-frames", 1)
    assert code == 0, err
    assert out["m_lmd"].startswith("skipped: --identity-only")


class StandInBundle:
    """The AudioBundle.sync API (another module trains the real one)."""

    calls: list = []

    def sync(self, pcm16k, fps, landmarks478, max_offset=15):
        StandInBundle.calls.append((len(pcm16k), fps, np.asarray(landmarks478).shape, max_offset))
        return {"offset": 2, "confidence": 0.75, "frames": len(landmarks478)}


def test_audio_model_wiring(clip, monkeypatch, tmp_path):
    from minerf_cli.audio_model import bundle

    loaded = []
    monkeypatch.setattr(bundle.AudioBundle, "load",
                        classmethod(lambda cls, path, device="cpu": loaded.append(Path(path)) or StandInBundle()))
    model_dir = tmp_path / "audio_model"
    model_dir.mkdir()
    StandInBundle.calls.clear()
    code, out, err = evaluate(clip["store"], clip["video"], "--ref", clip["store"], "--identity-frames", 1,
                              "--audio-model", model_dir, "--device", "cpu")
    assert code == 0, err
    assert loaded == [model_dir]  # loaded once for both inputs
    store_run, video_run = out["inputs"]
    for r in (store_run, video_run):
        assert r["minerf_sync_offset_frames"] == 2 and r["minerf_sync_confidence"] == 0.75
        assert r["minerf_sync_model"] == str(model_dir) and "not SyncNet" in r["minerf_sync_note"]
    assert store_run["audio"].endswith(":/audio") and "audio track" in video_run["audio"]
    assert out["mean"]["minerf_sync_confidence"] == 0.75
    assert [c[1:] for c in StandInBundle.calls] == [(25.0, (N, 478, 3), 15)] * 2
    assert all(abs(c[0] - N * 640) <= 640 for c in StandInBundle.calls)  # the clip's 0.32 s of audio
    # frames without audio of their own: --audio says which speech, else skipped
    pngs = _write_pngs(tmp_path / "pngs", clip["frames"])
    code, out, err = evaluate(pngs, "--ref", clip["store"], "--identity-frames", 1, "--audio-model", model_dir)
    assert code == 0, err
    assert out["minerf_sync_confidence"].startswith("skipped: no audio") and out["audio"] is None
    code, out, err = evaluate(pngs, "--ref", clip["store"], "--identity-frames", 1, "--audio-model", model_dir,
                              "--audio", clip["wav"])
    assert code == 0, err
    assert out["audio"] == str(clip["wav"]) and out["minerf_sync_confidence"] == 0.75
    assert out["audio_fps_assumed"] == 25.0


def test_syncnet_through_the_cli(clip, tmp_path):
    weights = _weights(tmp_path / "syncnet_v2.model")
    code, out, err = evaluate(clip["store"], "--ref", clip["store"], "--identity-frames", 1,
                              "--syncnet", weights, "--device", "cpu")
    assert code == 0, err
    assert math.isfinite(out["lse_d"]) and out["lse_d"] > 0 and math.isfinite(out["lse_c"]) and out["lse_c"] >= 0
    assert -15 <= out["lse_offset_frames"] <= 15 and out["lse_windows"] == N - 5
    assert out["lse_weights"] == f"user-supplied SyncNet weights: {weights}"
    # the same numbers from the module directly
    crops = np.stack(list(syncnet.face_crops(clip["frames"], clip["landmarks"])))
    with h5py.File(clip["store"]) as f:
        pcm = f["audio/pcm"][...]
    by_hand = syncnet.lse(syncnet.load_syncnet(weights), crops, pcm)
    assert out["lse_d"] == pytest.approx(by_hand.lse_d, rel=1e-4)
    assert out["lse_offset_frames"] == by_hand.offset


def _one_line_error(code, out, err, expect_code, *words):
    assert code == expect_code, err
    assert out is None and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


def test_missing_and_bad_lip_files(clip, tmp_path):
    store = clip["store"]
    _one_line_error(*evaluate(store, "--ref", store, "--syncnet", tmp_path / "nope.model"), 1, "nope.model", "not found")
    _one_line_error(*evaluate(store, "--ref", store, "--audio", tmp_path / "nope.wav"), 1, "nope.wav", "not found")
    _one_line_error(*evaluate(store, "--ref", store, "--audio-model", tmp_path / "nope_dir"), 1, "nope_dir", "not found")
    bad = tmp_path / "bad.model"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    _one_line_error(*evaluate(store, "--ref", store, "--syncnet", bad), 3, "bad.model", "SyncNet")
    fresh = tmp_path / "fresh.model"
    torch.save(syncnet.syncnet_state_dict_template(), fresh)
    _one_line_error(*evaluate(store, "--ref", store, "--syncnet", fresh), 3, "fresh.model", "untrained")


def test_audio_model_with_a_real_bundle(clip, tmp_path):
    """The real AudioBundle (untrained: this checks the API between the two modules, not its values)."""
    bundle = pytest.importorskip("minerf_cli.audio_model.bundle")
    from minerf_cli.facemodel import MOUTH_SET, load_face_model

    model = load_face_model()
    cfg = bundle.default_config(list(MOUTH_SET), [model.expression_index(n) for n in MOUTH_SET])
    bundle.AudioBundle(cfg).save(tmp_path / "am")
    code, out, err = evaluate(clip["store"], "--ref", clip["store"], "--identity-frames", 1,
                              "--audio-model", tmp_path / "am", "--device", "cpu")
    assert code == 0, err
    assert -15 <= out["minerf_sync_offset_frames"] <= 15 and out["minerf_sync_confidence"] >= 0
