"""JEAN's landmark autoencoder (sec. 3.1, suppl. 8.1): disentangles mouth from eye-nose motion.

Architecture (suppl. 8.1.2: "The landmark encoder and decoder consisted of 4 MLPs each with
256, 256, 128 as the hidden layer sizes and Leaky ReLU activations (negative slope set to
0.02). The output features e_f and e_m were 64 dimensions each."). We read "4 MLPs" as 4
linear layers each:

* encoder LE: 51*D -> 256 -> 256 -> 128 -> 128, the 128-d output split in half:
  [:64] = eye-nose embedding e_f, [64:] = mouth embedding e_m (one shared trunk with a split
  output, as the paper does explicitly for its expression transformer, "split in half");
* decoder LD: [e_f; e_m] (128) -> 256 -> 256 -> 128 -> 51*D.

LeakyReLU(0.02) after every hidden layer, none after the last layer.

Mouth swap (sec. 3.1): "The mouth embeddings e_mA and e_mB of the two frames A and B are
swapped with a probability p and passed to a landmark decoder (LD) to predict the
corresponding landmarks p'^{fA}_{mB} = LD(e_fA, e_mB) and p'^{fB}_{mA} = LD(e_fB, e_mA). We
get the ground truth p^{fA}_{mB} by replacing the mouth landmarks of the frame A with the
corresponding mouth landmarks of the frame B." Suppl. 8.1.2: "For swapping, p was set to 0.8
and the last 20 points in the landmarks representing the lips were used." and "we sample
frames A and B randomly from the same video of an identity". So it is the MOUTH embedding
that is swapped; the target for A's eye-nose embedding is A's eye-nose landmarks + B's mouth
landmarks. Without a swap (probability 1 - p) each frame is simply reconstructed.

Loss (eq. 1): L1 between the predictions and those targets; we use the mean absolute error
over all coordinates (= ||.||_1 / (51 D)) of each term and add the two terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .landmarks68 import NUM_POINTS, mouth_mask

EMB_DIM = 64
HIDDEN = (256, 256, 128)
SLOPE = 0.02


def mlp(sizes: list[int], slope: float = SLOPE) -> nn.Sequential:
    """Linear layers between consecutive sizes, LeakyReLU(slope) between them (none at the end)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class LandmarkAutoencoder(nn.Module):
    """LE / LD of JEAN. Input: (B, 51 * dims) normalised landmark vectors (landmarks68.landmark_vectors)."""

    def __init__(self, dims: int = 2, n_points: int = NUM_POINTS, hidden: tuple[int, ...] = HIDDEN,
                 emb_dim: int = EMB_DIM, slope: float = SLOPE):
        super().__init__()
        self.dims, self.n_points, self.emb_dim = dims, n_points, emb_dim
        n_in = n_points * dims
        self.encoder = mlp([n_in, *hidden, 2 * emb_dim], slope)
        self.decoder = mlp([2 * emb_dim, *hidden, n_in], slope)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 51 D) -> (eye-nose e_f (B, 64), mouth e_m (B, 64))."""
        z = self.encoder(x)
        return z[..., :self.emb_dim], z[..., self.emb_dim:]

    def encode_mouth(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[1]

    def decode(self, e_f: torch.Tensor, e_m: torch.Tensor) -> torch.Tensor:
        """(B, 64), (B, 64) -> (B, 51 D) landmarks."""
        return self.decoder(torch.cat([e_f, e_m], dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))


@dataclass
class SwapBatch:
    swap: torch.Tensor  # (B,) bool: pair i has its mouth embeddings swapped
    target_a: torch.Tensor  # (B, 51 D): a's landmarks, with b's mouth points where swap
    target_b: torch.Tensor  # (B, 51 D): b's landmarks, with a's mouth points where swap


def swap_mouth(batch_a: torch.Tensor, batch_b: torch.Tensor, p: float = 0.8,
               video_a: torch.Tensor | None = None, video_b: torch.Tensor | None = None,
               generator: torch.Generator | None = None, dims: int = 2) -> SwapBatch:
    """Draw JEAN's mouth swaps for pairs (batch_a[i], batch_b[i]) of frames and build the targets.

    Each pair is swapped independently with probability ``p`` (0.8 in the paper). JEAN only
    pairs frames of the same video: when ``video_a``/``video_b`` (B,) ids are given, pairs of
    different videos are never swapped (they are reconstructed as they are). The targets
    replace the mouth points (the last 20 of the 51) of a by b's and vice versa where swapped.
    """
    if batch_a.shape != batch_b.shape or batch_a.ndim != 2:
        raise ValueError(f"expected two (B, 51*D) batches, got {tuple(batch_a.shape)} and {tuple(batch_b.shape)}")
    n = batch_a.shape[0]
    u = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
    swap = (u < p).to(batch_a.device)
    if (video_a is None) != (video_b is None):
        raise ValueError("give both video_a and video_b, or neither")
    if video_a is not None:
        swap = swap & (torch.as_tensor(video_a, device=batch_a.device) == torch.as_tensor(video_b, device=batch_a.device))
    cols = mouth_mask(dims, device=batch_a.device)[None, :] & swap[:, None]
    return SwapBatch(swap=swap, target_a=torch.where(cols, batch_b, batch_a),
                     target_b=torch.where(cols, batch_a, batch_b))


def autoencoder_loss(model: LandmarkAutoencoder, batch_a: torch.Tensor, batch_b: torch.Tensor,
                     swap: SwapBatch) -> torch.Tensor:
    """Eq. 1: L1(LD(e_fA, e_m?) , target_a) + L1(LD(e_fB, e_m?), target_b), with the mouth
    embeddings exchanged where ``swap.swap``."""
    e_fa, e_ma = model.encode(batch_a)
    e_fb, e_mb = model.encode(batch_b)
    s = swap.swap[:, None]
    m_for_a = torch.where(s, e_mb, e_ma)
    m_for_b = torch.where(s, e_ma, e_mb)
    pred_a = model.decode(e_fa, m_for_a)
    pred_b = model.decode(e_fb, m_for_b)
    return (pred_a - swap.target_a).abs().mean() + (pred_b - swap.target_b).abs().mean()


def sample_pairs(video_ids: torch.Tensor, n: int, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """n random index pairs (i, j) of frames of the same video (JEAN samples A, B "randomly from
    the same video of an identity"). video_ids (N,) int; returns two (n,) long tensors."""
    video_ids = torch.as_tensor(video_ids).cpu()
    idx_a = torch.randint(len(video_ids), (n,), generator=generator)
    # for each a, a uniform random frame of the same video
    order = torch.argsort(video_ids, stable=True)
    sorted_ids = video_ids[order]
    uniq, counts = torch.unique_consecutive(sorted_ids, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    which = torch.searchsorted(uniq, video_ids[idx_a])
    offs = (torch.rand(n, generator=generator) * counts[which]).long().clamp_max(counts[which] - 1)
    idx_b = order[starts[which] + offs]
    return idx_a, idx_b
