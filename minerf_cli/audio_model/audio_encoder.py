"""JEAN's audio encoder AE (sec. 3.1, suppl. 8.2.2), adapted to log-mel features.

JEAN uses "the same architecture as the audio encoder of [Guo et al. 2021]" (AD-NeRF) on
DeepSpeech features. AD-NeRF's AudioNet takes a (B, 16, 29) window of DeepSpeech logits and
applies four Conv1d(kernel 3, stride 2, padding 1) layers over time, 29->32->32->64->64
channels (16 -> 8 -> 4 -> 2 -> 1 steps), LeakyReLU(0.02) after each, then an MLP
64 -> 64 -> dim_aud (LeakyReLU(0.02) between).

Here the input is a window of log-mel frames, (B, T, 80) (T = 16 by default, any T >= 1
works). Since 80 mel bands carry more (and less sparse) information than 29 logits, the
channels are widened a little:

    Conv1d(80, 64, 3, s2, p1) -> LReLU -> Conv1d(64, 64, 3, s2, p1) -> LReLU
    -> Conv1d(64, 128, 3, s2, p1) -> LReLU -> Conv1d(128, 128, 3, s2, p1) -> LReLU
    -> mean over the remaining time steps (1 step for T = 16; makes any T work)
    -> Linear(128, 128) -> LReLU -> Linear(128, 64)

Log-mel values have a large offset and scale (e.g. log power in [-12, 3] or dB), so the
encoder holds per-band ``mean`` / ``std`` buffers (identity by default): set them with
:meth:`AudioEncoder.set_normalisation` from training-set statistics; they are saved with the
state dict.
"""

from __future__ import annotations

import torch
from torch import nn

N_MELS = 80
WINDOW = 16
EMB_DIM = 64
SLOPE = 0.02


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int = N_MELS, emb_dim: int = EMB_DIM,
                 channels: tuple[int, ...] = (64, 64, 128, 128), hidden: int = 128, slope: float = SLOPE):
        super().__init__()
        self.n_mels, self.emb_dim = n_mels, emb_dim
        convs: list[nn.Module] = []
        c_in = n_mels
        for c in channels:
            convs += [nn.Conv1d(c_in, c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(slope)]
            c_in = c
        self.conv = nn.Sequential(*convs)
        self.fc = nn.Sequential(nn.Linear(c_in, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, emb_dim))
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    @torch.no_grad()
    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-5) -> None:
        """Per-band feature statistics (n_mels,) applied as (x - mean) / std before the convolutions."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).clamp_min(eps))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) log-mel windows -> (B, 64) audio embeddings e_a."""
        if mel.ndim != 3 or mel.shape[-1] != self.n_mels:
            raise ValueError(f"expected (B, T, {self.n_mels}) log-mel windows, got shape {tuple(mel.shape)}")
        x = ((mel - self.mean) / self.std).transpose(1, 2)  # (B, n_mels, T)
        x = self.conv(x).mean(-1)
        return self.fc(x)


def mel_windows(mel: torch.Tensor, centres: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Cut (B, window, n_mels) windows of a (F, n_mels) log-mel sequence around frame indices
    ``centres`` (B,): rows centres - window//2 ... centres + window - window//2 - 1, edge-padded
    (repeating the first / last frame) where they run off the sequence."""
    mel = torch.as_tensor(mel)
    centres = torch.as_tensor(centres, device=mel.device).long()
    offs = torch.arange(window, device=mel.device) - window // 2
    idx = (centres[:, None] + offs[None, :]).clamp(0, mel.shape[0] - 1)
    return mel[idx]
