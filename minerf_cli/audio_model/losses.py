"""JEAN's contrastive loss (eq. 2) and a SyncNet-style audio-mouth offset / confidence score.

InfoNCE (sec. 3.1): for a mouth embedding e_m the audio embedding of the same frame e_a^+ is
the positive key and other audio embeddings e_a^- are negatives; d(x, y) = <x, y> /
(tau |x| |y|), tau = 0.1. JEAN draws negatives "from the same identity but different video";
here the caller says which batch entries are allowed negatives of each anchor through a
(B, B) bool mask (see :func:`negatives_mask`), and every allowed negative of the batch is
used (the usual multi-negative InfoNCE; eq. 2 writes one negative per tuple).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def cosine_logits(audio_emb: torch.Tensor, mouth_emb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """(B, B) logits[i, j] = cos(mouth_i, audio_j) / temperature."""
    return F.normalize(mouth_emb, dim=-1) @ F.normalize(audio_emb, dim=-1).T / temperature


def info_nce(audio_emb: torch.Tensor, mouth_emb: torch.Tensor, temperature: float = 0.1,
             negatives_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with the mouth embedding of frame i as anchor, the audio embedding of frame i as
    its positive and the audio embeddings j with ``negatives_mask[i, j]`` as its negatives:

        loss_i = -log( exp(d_ii) / (exp(d_ii) + sum_{j neg of i} exp(d_ij)) )

    audio_emb, mouth_emb: (B, 64). negatives_mask: (B, B) bool, default all j != i; the
    diagonal is never a negative. The loss is the mean of loss_i over anchors with at least one
    negative (an anchor without negatives has loss 0 and is left out); 0 if none has any.
    """
    if audio_emb.shape != mouth_emb.shape or audio_emb.ndim != 2:
        raise ValueError(f"expected two (B, D) embeddings, got {tuple(audio_emb.shape)} and {tuple(mouth_emb.shape)}")
    b = audio_emb.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=audio_emb.device)
    neg = ~eye if negatives_mask is None else (torch.as_tensor(negatives_mask, device=audio_emb.device).bool() & ~eye)
    logits = cosine_logits(audio_emb, mouth_emb, temperature)
    logits = logits.masked_fill(~(neg | eye), float("-inf"))
    per_anchor = -torch.log_softmax(logits, dim=1).diagonal()
    has_neg = neg.any(1)
    if not bool(has_neg.any()):
        return (logits.diagonal() * 0.0).sum()
    return per_anchor[has_neg].mean()


def negatives_mask(identity: torch.Tensor, video: torch.Tensor | None = None, frame: torch.Tensor | None = None,
                   min_gap: int = 0, different_video: bool = False) -> torch.Tensor:
    """(B, B) bool mask of allowed negatives for :func:`info_nce`: same identity, not itself, and

    * ``different_video=True``: only frames of other videos of the identity (JEAN's choice);
    * otherwise, given ``video`` and ``frame`` (B,): frames of other videos, or of the same
      video more than ``min_gap`` frames away (nearby frames look and sound alike: not fair
      negatives).
    """
    identity = torch.as_tensor(identity)
    m = identity[:, None] == identity[None, :]
    m &= ~torch.eye(len(identity), dtype=torch.bool, device=identity.device)
    if video is not None:
        video = torch.as_tensor(video, device=identity.device)
        other = video[:, None] != video[None, :]
        if different_video:
            m &= other
        elif frame is not None:
            frame = torch.as_tensor(frame, device=identity.device)
            far = (frame[:, None] - frame[None, :]).abs() > min_gap
            m &= other | far
    elif different_video:
        raise ValueError("different_video needs video ids")
    return m


@dataclass
class SyncResult:
    offsets: torch.Tensor  # (2K+1,) long, -K..K
    similarity: torch.Tensor  # (2K+1,) mean cosine similarity of audio[t] and mouth[t + offset]
    best_offset: int  # argmax of similarity; > 0: the mouth lags the audio by that many frames
    confidence: float  # median(distance) - min(distance), distance = 1 - similarity


def sync_scores(audio_emb: torch.Tensor, mouth_emb: torch.Tensor, max_offset: int = 15) -> SyncResult:
    """Audio-mouth synchronisation of one clip (T frames of 64-d embeddings), SyncNet-style.

    For each offset k in [-K, K] (K = min(max_offset, T - 1)), the mean over the overlapping
    frames of cos(audio[t], mouth[t + k]). The best offset maximises it (so mouth[t] =
    audio[t - 3], a mouth 3 frames late, gives +3). As in SyncNet (Chung & Zisserman 2016),
    the confidence is the median over offsets of the distance minus its minimum, with the
    distance here 1 - cosine similarity (SyncNet uses the L2 distance of its embeddings): a
    sharp, unique peak -> high confidence; unrelated streams -> flat curve -> near 0.
    """
    if audio_emb.shape != mouth_emb.shape or audio_emb.ndim != 2:
        raise ValueError(f"expected two (T, D) embeddings, got {tuple(audio_emb.shape)} and {tuple(mouth_emb.shape)}")
    t = audio_emb.shape[0]
    k_max = max(0, min(int(max_offset), t - 1))
    a = F.normalize(audio_emb.detach().float(), dim=-1)
    m = F.normalize(mouth_emb.detach().float(), dim=-1)
    offsets = torch.arange(-k_max, k_max + 1)
    sims = []
    for k in offsets.tolist():
        if k >= 0:
            s = (a[:t - k] * m[k:]).sum(-1)
        else:
            s = (a[-k:] * m[:t + k]).sum(-1)
        sims.append(s.mean())
    sim = torch.stack(sims).cpu()
    dist = 1.0 - sim
    best = int(offsets[int(torch.argmax(sim))])
    conf = float(dist.median() - dist.min())
    return SyncResult(offsets=offsets, similarity=sim, best_offset=best, confidence=conf)
