"""JEAN model parts (minerf_cli.audio_model): shapes, swap statistics, losses, sync, landmark map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minerf_cli.audio_model import (AudioEncoder, LandmarkAutoencoder, autoencoder_loss, info_nce, landmark_vectors,
                                    mel_windows, negatives_mask, sample_pairs, swap_mouth, sync_scores)
from minerf_cli.audio_model import landmarks68 as L68

# mediapipe's FACEMESH_LIPS / FACEMESH_{RIGHT,LEFT}_EYE vertex sets (mediapipe 0.10 face_mesh_connections)
MP_LIPS = {0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
           270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415}
MP_RIGHT_EYE = {7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246}
MP_LEFT_EYE = {249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466}


def ict_mediapipe_face(jaw_open: float = 0.0):
    """A real-looking mediapipe face: the ICT head's 468 mediapipe landmarks (via the repo's
    correspondence) in image-like coordinates (x right, y down), padded to 478; plus the ICT
    model's own 68 landmarks in the same coordinates."""
    from minerf_cli.facemodel import load_face_model
    from minerf_cli.tracking import landmark_basis, load_correspondence

    model, corr = load_face_model(), load_correspondence()
    mean, _, expr = landmark_basis(model, corr)
    ex = np.zeros(model.num_expression, np.float32)
    ex[model.expression_index("jawOpen")] = jaw_open
    mp = mean + np.tensordot(ex, expr, axes=(0, 0))
    lm68 = model.vertices(expression=ex)[model.landmarks68]
    flip = np.array([1.0, -1.0, -1.0], np.float32)
    mp, lm68 = mp * flip, lm68 * flip
    mp478 = np.concatenate([mp, mp[:10]], 0)  # irises: any values, unused
    return mp478.astype(np.float32), lm68.astype(np.float32)


# ---------------------------------------------------------------- landmarks


def test_mapping_index_sets():
    m = L68.MEDIAPIPE_TO_68
    assert len(m) == 68 and len(set(m)) == 68 and max(m) < 468
    assert {m[i] for i in L68.MOUTH_68} <= MP_LIPS
    assert {m[i] for i in L68.RIGHT_EYE_68} <= MP_RIGHT_EYE
    assert {m[i] for i in L68.LEFT_EYE_68} <= MP_LEFT_EYE
    assert len(L68.MEDIAPIPE_TO_51) == 51
    assert L68.EYE_NOSE == tuple(range(31)) and L68.MOUTH == tuple(range(31, 51))
    assert L68.mouth_columns(2) == list(range(62, 102))
    assert L68.mouth_columns(3) == list(range(93, 153))


def test_mapping_on_ict_face():
    """On the ICT head the mapped mediapipe points sit on the model's own 68 landmarks, and the
    51-point mouth lies in the mouth region, below the eye-nose points, between the mouth corners."""
    mp478, lm68 = ict_mediapipe_face(jaw_open=0.5)
    pts68 = L68.mediapipe_to_68(mp478)
    err = np.linalg.norm(pts68 - lm68, axis=1)  # cm; the head is ~15 cm wide
    assert err[36:68].max() < 1.0, err[36:68]
    assert err[27:36].max() < 1.0 and err[17:27].max() < 2.5 and err[:17].max() < 2.5
    p51 = L68.mediapipe_to_51(mp478)
    mouth, en = p51[list(L68.MOUTH)], p51[list(L68.EYE_NOSE)]
    assert en[:, 1].max() < mouth[:, 1].min()  # y down: all mouth points below brows, eyes and nose
    left_c, right_c = p51[48 - 17, 0], p51[54 - 17, 0]
    assert ((mouth[:, 0] >= left_c - 1e-6) & (mouth[:, 0] <= right_c + 1e-6)).all()
    # opening the jaw opens the inner lips (62 upper, 66 lower) in the 51-point layout
    closed = L68.mediapipe_to_51(ict_mediapipe_face(0.0)[0])
    gap = lambda p: p[66 - 17, 1] - p[62 - 17, 1]
    assert gap(p51) > gap(closed) + 0.3


def test_landmark_vectors_normalisation():
    mp478, _ = ict_mediapipe_face()
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(4):  # random scale, translation, small roll of the same face
        s, t, a = rng.uniform(5, 20), rng.uniform(-100, 100, 3), rng.uniform(-0.3, 0.3)
        r = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], np.float32)
        frames.append(mp478 @ r.T * s + t)
    frames = np.stack(frames).astype(np.float32)
    v2 = landmark_vectors(frames, dims=2)
    v3 = landmark_vectors(frames, dims=3, deroll=True)
    assert v2.shape == (4, 102) and v3.shape == (4, 153) and v2.dtype == np.float32
    p = v2.reshape(4, 51, 2)
    eyes_r, eyes_l = p[:, list(L68.RIGHT_EYE)].mean(1), p[:, list(L68.LEFT_EYE)].mean(1)
    np.testing.assert_allclose(0.5 * (eyes_r + eyes_l), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(eyes_l - eyes_r, axis=1), 1, atol=1e-5)
    # with deroll, scale / translation / roll are all removed (x, y)
    q = v3.reshape(4, 51, 3)[..., :2]
    np.testing.assert_allclose(q, q[:1].repeat(4, 0), atol=1e-4)
    with pytest.raises(ValueError):
        landmark_vectors(frames[:, :100])


# ---------------------------------------------------------------- autoencoder


def test_autoencoder_shapes():
    model = LandmarkAutoencoder(dims=2)
    x = torch.randn(5, 102)
    e_f, e_m = model.encode(x)
    assert e_f.shape == (5, 64) and e_m.shape == (5, 64)
    assert model(x).shape == (5, 102)
    lin = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in lin] == [256, 256, 128, 128]
    assert LandmarkAutoencoder(dims=3)(torch.randn(2, 153)).shape == (2, 153)


def test_swap_probability_and_videos():
    g = torch.Generator().manual_seed(0)
    n = 20000
    a, b = torch.randn(n, 102), torch.randn(n, 102)
    s = swap_mouth(a, b, p=0.8, generator=g)
    frac = s.swap.float().mean().item()
    assert abs(frac - 0.8) < 4 * math.sqrt(0.8 * 0.2 / n), frac
    mcols = L68.mouth_columns(2)
    other = [c for c in range(102) if c not in mcols]
    sw, ns = s.swap, ~s.swap
    # swapped pairs: a's eye-nose + b's mouth (and vice versa); others unchanged
    assert torch.equal(s.target_a[sw][:, mcols], b[sw][:, mcols])
    assert torch.equal(s.target_b[sw][:, mcols], a[sw][:, mcols])
    assert torch.equal(s.target_a[:, other], a[:, other]) and torch.equal(s.target_b[:, other], b[:, other])
    assert torch.equal(s.target_a[ns], a[ns]) and torch.equal(s.target_b[ns], b[ns])
    # never across videos
    va = torch.arange(n) % 7
    vb = va.clone()
    vb[::2] += 1  # every other pair crosses videos
    s2 = swap_mouth(a, b, p=0.8, video_a=va, video_b=vb, generator=torch.Generator().manual_seed(1))
    assert not s2.swap[::2].any()
    frac_same = s2.swap[1::2].float().mean().item()
    assert abs(frac_same - 0.8) < 4 * math.sqrt(0.8 * 0.2 / (n // 2))
    assert not swap_mouth(a[:100], b[:100], p=0.0).swap.any() and swap_mouth(a[:100], b[:100], p=1.0).swap.all()


def test_sample_pairs_same_video():
    vids = torch.tensor([0] * 5 + [3] * 2 + [1] * 9)
    ia, ib = sample_pairs(vids, 2000, torch.Generator().manual_seed(0))
    assert torch.equal(vids[ia], vids[ib])
    assert len(set(ib[vids[ia] == 1].tolist())) == 9  # uniform over the video's frames


def test_autoencoder_loss_decreases():
    torch.manual_seed(0)
    # tiny synthetic "videos": eye-nose and mouth points driven by separate latent factors
    n = 256
    eye_lat, mouth_lat = torch.randn(n, 3), torch.randn(n, 3)
    base = torch.randn(1, 102)
    W_en, W_m = torch.randn(3, 62) * 0.3, torch.randn(3, 40) * 0.3
    x = base + torch.cat([eye_lat @ W_en, mouth_lat @ W_m], 1)
    model = LandmarkAutoencoder(dims=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(50):
        ia, ib = torch.randint(n, (64,), generator=g), torch.randint(n, (64,), generator=g)
        s = swap_mouth(x[ia], x[ib], p=0.8, generator=g)
        loss = autoencoder_loss(model, x[ia], x[ib], s)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), (losses[:5], losses[-5:])


# ---------------------------------------------------------------- audio encoder


def test_audio_encoder_shapes():
    enc = AudioEncoder()
    assert enc(torch.randn(3, 16, 80)).shape == (3, 64)
    assert enc(torch.randn(2, 7, 80)).shape == (2, 64)
    assert enc(torch.randn(2, 40, 80)).shape == (2, 64)
    enc.set_normalisation(torch.full((80,), -5.0), torch.full((80,), 2.0))
    assert "mean" in enc.state_dict()
    with pytest.raises(ValueError):
        enc(torch.randn(2, 16, 29))
    mel = torch.arange(10.0)[:, None].repeat(1, 80)
    w = mel_windows(mel, torch.tensor([0, 5, 9]), window=4)
    assert w.shape == (3, 4, 80)
    assert w[0, :, 0].tolist() == [0, 0, 0, 1] and w[1, :, 0].tolist() == [3, 4, 5, 6] and w[2, :, 0].tolist() == [7, 8, 9, 9]


# ---------------------------------------------------------------- losses


def test_info_nce_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    m = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    tau = 0.1
    cos = lambda x, y: float(x @ y / (x.norm() * y.norm()))
    d = [[cos(m[i], a[j]) / tau for j in range(3)] for i in range(3)]
    full = np.mean([-(d[i][i] - math.log(sum(math.exp(d[i][j]) for j in range(3)))) for i in range(3)])
    assert info_nce(a, m, tau).item() == pytest.approx(full, rel=1e-5)
    # mask: anchor 0 may only use 2, anchor 1 only 0, anchor 2 none (left out of the mean)
    mask = torch.tensor([[False, False, True], [True, False, False], [False, False, False]])
    l0 = -(d[0][0] - math.log(math.exp(d[0][0]) + math.exp(d[0][2])))
    l1 = -(d[1][1] - math.log(math.exp(d[1][1]) + math.exp(d[1][0])))
    assert info_nce(a, m, tau, mask).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    assert info_nce(a, m, tau, torch.zeros(3, 3, dtype=torch.bool)).item() == 0.0


def test_negatives_mask():
    ident = torch.tensor([0, 0, 0, 1])
    video = torch.tensor([0, 0, 1, 2])
    frame = torch.tensor([0, 10, 0, 0])
    m = negatives_mask(ident, video, frame, min_gap=5)
    assert m.tolist() == [[False, True, True, False], [True, False, True, False],
                          [True, True, False, False], [False, False, False, False]]
    m2 = negatives_mask(ident, video, different_video=True)
    assert m2.tolist() == [[False, False, True, False], [False, False, True, False],
                           [True, True, False, False], [False, False, False, False]]
    m3 = negatives_mask(ident, video, torch.tensor([0, 3, 0, 0]), min_gap=5)
    assert not m3[0, 1] and m3[0, 2]


def test_info_nce_trains_audio_encoder():
    """Synthetic data where the audio window determines the mouth embedding: InfoNCE drops."""
    torch.manual_seed(0)
    n, T = 512, 16
    z = torch.randn(n, 8)  # per-frame "phoneme" latent
    mix = torch.randn(8, 80)
    mel = (z @ mix)[:, None, :] * torch.linspace(0.5, 1.0, T)[None, :, None] + 0.1 * torch.randn(n, T, 80)
    mouth = torch.tanh(z @ torch.randn(8, 64))
    enc = AudioEncoder()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        idx = torch.randperm(n, generator=g)[:64]
        loss = info_nce(enc(mel[idx]), mouth[idx], 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), (losses[:5], losses[-5:])


def test_sync_scores_planted_offset():
    torch.manual_seed(0)
    T = 100
    audio = torch.randn(T + 3, 64)
    mouth = audio[:-3] + 0.3 * torch.randn(T, 64)  # mouth[t] = audio[t - 3]: mouth 3 frames late
    audio = audio[3:]
    res = sync_scores(audio, mouth, max_offset=15)
    assert res.offsets.shape == (31,) and res.similarity.shape == (31,)
    assert res.best_offset == 3
    aligned = sync_scores(audio, audio + 0.3 * torch.randn(T, 64))
    assert aligned.best_offset == 0
    shuffled = sync_scores(audio, mouth[torch.randperm(T)])
    assert aligned.confidence > 0.5 and shuffled.confidence < 0.2 * aligned.confidence
    assert res.confidence > shuffled.confidence
    short = sync_scores(torch.randn(5, 64), torch.randn(5, 64), max_offset=15)
    assert short.offsets.tolist() == list(range(-4, 5))
