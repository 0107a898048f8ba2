"""The speech-energy envelope blended into jawOpen (minerf_cli.audio_model.energy, AudioBundle)
and the experiment helpers of scripts/jaw_features.py (speed perturbation, phone rows)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from minerf_cli.audio_model.energy import blend_energy, energy_envelope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def test_energy_envelope_hand_computed():
    w = np.zeros((3, 5, 80), np.float32)
    w[:, 0, :] = 100.0  # steps outside centre +-1: ignored
    w[:, 4, :] = 100.0
    w[:, :, 4] = 100.0  # bands outside [5, 40): ignored
    w[:, :, 40] = 100.0
    w[0, 1:4, 5:40] = 1.0  # the whole block at 1 -> 1
    w[1, 2, 5:40] = 3.0  # only the centre step at 3 -> 3 / 3 steps = 1
    w[2, 1, 5:40] = -6.0  # one side step -> -2
    e = energy_envelope(w, bands=(5, 40), half_steps=1)
    np.testing.assert_allclose(e, [1.0, 1.0, -2.0], atol=1e-6)
    # half_steps 0: the centre step only
    np.testing.assert_allclose(energy_envelope(w, half_steps=0), [1.0, 3.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError):
        energy_envelope(w, bands=(40, 90))


def test_blend_energy_hand_computed():
    pred = np.array([0.0, 1.0, 2.0, 3.0])
    energy = np.array([1.0, 1.0, 1.0, 5.0])
    # std(pred) = sqrt(1.25); z(energy) = (e - 2) / sqrt(3)
    sp, z = np.sqrt(1.25), (energy - 2.0) / np.sqrt(3.0)
    out = blend_energy(pred, energy, beta=0.5)
    np.testing.assert_allclose(out, pred + 0.5 * sp * z, atol=1e-6)
    np.testing.assert_allclose(out, [-0.32275, 0.67725, 1.67725, 3.96825], atol=1e-4)
    assert out.mean() == pytest.approx(1.5, abs=1e-6)  # the mean level is kept
    # constant energy, beta 0, too few frames: unchanged
    np.testing.assert_allclose(blend_energy(pred, np.ones(4), 0.5), pred)
    np.testing.assert_allclose(blend_energy(pred, energy, 0.0), pred)
    np.testing.assert_allclose(blend_energy(pred[:2], energy[:2], 0.5), pred[:2])
    with pytest.raises(ValueError):
        blend_energy(pred, energy[:3])


def test_bundle_blends_energy_into_jaw_only():
    """A new bundle adds the envelope to jawOpen only; energy=False and an old config (no
    "energy_blend") do not; the blend equals blend_energy on the smoothed prediction."""
    from minerf_cli.audio_model.bundle import AudioBundle, default_config
    from minerf_cli.audio_model.train import mouth_set_indices

    names, idx = mouth_set_indices()
    b = AudioBundle(default_config(names, idx), "cpu").eval()
    assert b.config["models"]["expression"]["energy_blend"]["beta"] == 0.25
    assert b.config["models"]["expression"]["smooth_sigma_frames"] == 1.0
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, b.window_steps, 80)).astype(np.float32)
    mean = np.full(len(names), 0.5, np.float32)  # away from the [0, 1] clip
    plain = b.predict_expressions(w, mean=mean, energy=False)
    blended = b.predict_expressions(w, mean=mean)
    j = names.index("jawOpen")
    others = [i for i in range(len(names)) if i != j]
    np.testing.assert_allclose(blended[:, others], plain[:, others], atol=1e-6)
    expect = np.clip(blend_energy(plain[:, j], energy_envelope(w), 0.25), 0, 1)
    np.testing.assert_allclose(blended[:, j], expect, atol=1e-5)
    assert not np.allclose(blended[:, j], plain[:, j])
    del b.config["models"]["expression"]["energy_blend"]
    np.testing.assert_allclose(b.predict_expressions(w, mean=mean), plain, atol=1e-6)


def test_warp_targets_and_speed_perturb():
    from jaw_features import speed_perturb, speed_ratio, warp_targets

    y = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    out, pos = warp_targets(y, 2.0)  # twice as fast: frames 0, 2, 4
    np.testing.assert_allclose(out, [0.0, 20.0, 40.0])
    np.testing.assert_allclose(pos, [0.0, 2.0, 4.0])
    out, _ = warp_targets(y, 0.5)  # half speed: every half frame, linearly interpolated
    np.testing.assert_allclose(out, np.arange(9) * 5.0)
    out, _ = warp_targets(np.array([0.0, np.nan, 20.0]), 0.5)
    np.testing.assert_allclose(out, [0.0, np.nan, np.nan, np.nan, 20.0])
    assert speed_ratio(1.25) == (4, 5) and speed_ratio(0.9) == (10, 9)
    pcm = np.sin(2 * np.pi * 100 * np.arange(16000) / 16000).astype(np.float32)
    p2, y2, n2, orig = speed_perturb(pcm, np.stack([y, y], 1), 1.25)
    assert len(p2) == 12800 and n2 == 4 and y2.shape == (4, 2)
    np.testing.assert_allclose(orig, [0.0, 1.25, 2.5, 3.75])
    np.testing.assert_allclose(y2[:, 0], [0.0, 12.5, 25.0, 37.5], atol=1e-5)
    # the tone moves to 125 Hz: its spectrum peaks there
    spec = np.abs(np.fft.rfft(p2[1000:11000]))
    assert abs(np.argmax(spec) * 16000 / 10000 - 125) <= 2


def test_phone_frames_hand_computed():
    from jaw_features import OPENNESS, PHONES, phone_frames

    segs = [("AA", 0, 1), ("M", 2, 2), ("+NSN+", 3, 3)]  # a filler counts as SIL; frame 4: no segment -> SIL
    oh = phone_frames(segs, 5, "onehot")
    assert oh.shape == (5, len(PHONES)) and np.all(oh.sum(1) == 1)
    assert [PHONES[i] for i in oh.argmax(1)] == ["AA", "AA", "M", "SIL", "SIL"]
    np.testing.assert_allclose(phone_frames(segs, 5, "openness")[:, 0], [OPENNESS["AA"], 1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        phone_frames(segs, 5, "other")
