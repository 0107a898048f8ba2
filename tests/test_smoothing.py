"""Learned temporal smoothing (minerf_cli.nerf.smoothing, MI-NeRF appendix E): the window
of neighbouring frames, AD-NeRF's attention smoother and its centre-focused start. CPU, fast."""

from __future__ import annotations

import pytest
import torch

from minerf_cli.nerf import smoothing
from minerf_cli.nerf.conditioning import FrameLatentCodes
from minerf_cli.nerf.smoothing import AttentionSmoother, ConditionSmoothing, neighbour_window

torch.testing.assert_close(torch.zeros(1), torch.zeros(1))  # pay torch.testing's lazy import at collection


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- neighbour_window


def test_window_is_centred_on_the_frame_inside_a_clip():
    win = neighbour_window(torch.tensor([10]), 100, window=8)
    assert win.dtype == torch.long and win.shape == (1, 8)
    assert win.tolist() == [[6, 7, 8, 9, 10, 11, 12, 13]]  # [i - 4, i + 4), frame at index 4
    assert win[0, 8 // 2] == 10


def test_window_is_clamped_at_the_clip_start_and_end():
    win = neighbour_window(torch.tensor([0, 2, 98, 99]), 100, window=8)
    assert win.tolist() == [
        [0, 0, 0, 0, 0, 1, 2, 3],
        [0, 0, 0, 1, 2, 3, 4, 5],
        [94, 95, 96, 97, 98, 99, 99, 99],
        [95, 96, 97, 98, 99, 99, 99, 99],
    ]


def test_window_uses_each_frames_own_clip_length():
    frame = torch.tensor([3, 3, 0, 5])
    n = torch.tensor([4, 50, 1, 7])
    win = neighbour_window(frame, n, window=8)
    assert win.tolist() == [
        [0, 0, 1, 2, 3, 3, 3, 3],  # clip of 4 frames: clamped to 3
        [0, 0, 1, 2, 3, 4, 5, 6],  # the same frame in a long clip: only the start clamps
        [0, 0, 0, 0, 0, 0, 0, 0],  # a one-frame clip
        [1, 2, 3, 4, 5, 6, 6, 6],
    ]
    assert (win[:, 4] == frame).all()
    assert ((win >= 0) & (win < n[:, None])).all()


def test_odd_and_unit_windows():
    assert neighbour_window(torch.tensor([5]), 10, window=5).tolist() == [[3, 4, 5, 6, 7]]
    assert neighbour_window(torch.tensor([5]), 10, window=1).tolist() == [[5]]


def test_window_rejects_frames_outside_their_clip():
    with pytest.raises(ValueError, match="outside its clip"):
        neighbour_window(torch.tensor([4]), torch.tensor([4]))
    with pytest.raises(ValueError, match="outside its clip"):
        neighbour_window(torch.tensor([-1]), 10)
    with pytest.raises(ValueError, match="shape"):
        neighbour_window(torch.tensor([1, 2]), torch.tensor([10, 10, 10]))
    with pytest.raises(ValueError, match="window"):
        neighbour_window(torch.tensor([1]), 10, window=0)


def test_window_indexes_frame_latent_codes_per_video():
    codes = FrameLatentCodes([3, 20], dim=4)
    video, frame = torch.tensor([0, 1]), torch.tensor([2, 0])
    win = neighbour_window(frame, codes.lengths[video])
    seq = codes(video[:, None].expand(-1, win.shape[1]), win)  # (B, T, L)
    assert seq.shape == (2, 8, 4)
    torch.testing.assert_close(seq[0, 4], codes(torch.tensor(0), torch.tensor(2)))
    torch.testing.assert_close(seq[0, 7], codes(torch.tensor(0), torch.tensor(2)))  # clamped, never video 1's codes
    torch.testing.assert_close(seq[1, 0], codes(torch.tensor(1), torch.tensor(0)))


# ---------------------------------------------------------------- AttentionSmoother


def test_smoother_shapes_and_weights_sum_to_one():
    torch.manual_seed(0)
    for centre_init in (True, False):
        sm = AttentionSmoother(dim=13, window=8, centre_init=centre_init)
        seq = torch.randn(5, 8, 13, generator=gen())
        w = sm.attention(seq)
        assert w.shape == (5, 8)
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(5))
        out = sm(seq)
        assert out.shape == (5, 13)
        torch.testing.assert_close(out, (w[..., None] * seq).sum(1))
    # extra leading dims are flattened and restored
    assert sm(torch.randn(2, 3, 8, 13, generator=gen())).shape == (2, 3, 13)
    with pytest.raises(ValueError, match="expected a sequence"):
        sm(torch.randn(5, 7, 13))


def test_conv_stack_is_ad_nerfs():
    sm = AttentionSmoother(dim=32)
    convs = [m for m in sm.conv if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (32, 16, 3, 1), (16, 8, 3, 1), (8, 4, 3, 1), (4, 2, 3, 1), (2, 1, 3, 1)]
    slopes = [m.negative_slope for m in sm.conv if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.02] * 5
    assert (sm.linear.in_features, sm.linear.out_features) == (8, 8)


def test_centre_init_returns_the_centre_frame():
    torch.manual_seed(0)
    sm = AttentionSmoother(dim=32, window=8)
    seq = torch.randn(16, 8, 32, generator=gen(1))
    w = sm.attention(seq)
    assert (w[:, 4] > 0.999).all()
    torch.testing.assert_close(sm(seq), seq[:, 4], atol=1e-3, rtol=0)
    # the bias gives exactly the requested mass
    assert torch.softmax(sm.linear.bias, 0)[4].item() == pytest.approx(smoothing.DEFAULT_CENTRE_MASS)


def test_default_init_starts_near_uniform():
    torch.manual_seed(0)
    sm = AttentionSmoother(dim=32, window=8, centre_init=False)
    w = sm.attention(torch.randn(16, 8, 32, generator=gen(1)))
    assert (w - 1 / 8).abs().max() < 0.1


def test_adam_learns_to_average_a_noisy_constant():
    torch.manual_seed(0)
    g = gen(1)
    sm = AttentionSmoother(dim=16, window=8)  # centre init: starts as "no smoothing"
    opt = torch.optim.Adam(sm.parameters(), lr=0.05)

    def batch(n=64):
        c = torch.randn(n, 1, 16, generator=g)
        return c + 0.5 * torch.randn(n, 8, 16, generator=g), c[:, 0]

    x_test, c_test = batch(256)

    def test_loss():
        with torch.no_grad():
            return ((sm(x_test) - c_test) ** 2).mean().item()

    before = test_loss()  # ~ noise variance 0.25 (returns the centre frame)
    for _ in range(100):
        x, c = batch()
        loss = ((sm(x) - c) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = test_loss()  # a uniform average reaches 0.25 / 8
    assert before == pytest.approx(0.25, rel=0.15)
    assert after < 0.3 * before
    assert sm.attention(x_test)[:, 4].mean() < 0.5  # no longer all on the centre frame


# ---------------------------------------------------------------- ConditionSmoothing


def test_condition_smoothing_shapes_gradients_and_switch_on():
    torch.manual_seed(0)
    cs = ConditionSmoothing(cond_dim=53, latent_dim=32)
    cond_seq = torch.randn(3, 8, 53, generator=gen(2), requires_grad=True)
    lat_seq = torch.randn(3, 8, 32, generator=gen(3), requires_grad=True)
    cond, lat = cs(cond_seq, lat_seq)
    assert cond.shape == (3, 53) and lat.shape == (3, 32)
    torch.testing.assert_close(cond, cond_seq[:, 4], atol=1e-3, rtol=0)
    torch.testing.assert_close(lat, lat_seq[:, 4], atol=1e-3, rtol=0)
    (cond.sum() + lat.sum()).backward()  # the latent codes and M(e, i) keep learning through it
    assert cond_seq.grad is not None and lat_seq.grad.abs().sum() > 0

    assert cs.start_step == smoothing.DEFAULT_START_STEP == 200_000
    assert not cs.enabled(199_999) and cs.enabled(200_000) and cs.enabled(400_000)
    assert cs.enabled(10, start_step=10) and not cs.enabled(9, start_step=10)
    assert ConditionSmoothing(4, 4, start_step=50).enabled(50)
    assert "start_step=200000" in repr(cs)


def test_without_latent_codes_only_the_condition_is_smoothed():
    """latent_dim 0 (train --latent-dim 0): no latent smoother; the empty codes pass through."""
    torch.manual_seed(0)
    s = ConditionSmoothing(cond_dim=6, latent_dim=0, window=4)
    assert s.latent is None
    cond, lat = s(torch.randn(3, 4, 6), torch.zeros(3, 4, 0))
    assert cond.shape == (3, 6) and lat.shape == (3, 0)
    codes = FrameLatentCodes([5, 3], dim=0)
    assert codes(torch.tensor([0, 1]), torch.tensor([4, 2])).shape == (2, 0)
