"""Learned temporal smoothing of the condition and the latent code (MI-NeRF appendix E, F).

The paper: "We do not apply smoothing on the expression parameters using a low pass filter
[...]. Instead, we learn a self-attention, similarly to (Guo et al. 2021 = AD-NeRF), that is
applied to both the output of the multiplicative module and the latent codes after the first
200k iterations during training. This ensures smooth results [...], reducing any jitter."
Appendix F adds that this counters the noise of the 3DMM fitting.

AD-NeRF's smoother is its ``AudioAttNet``: for a window of T = 8 neighbouring frames'
features ``(T, dim)``, a stack of 1-D convolutions over time (channels dim -> 16 -> 8 -> 4
-> 2 -> 1, kernel 3, padding 1, each followed by LeakyReLU(0.02)) gives one score per frame;
a linear layer T -> T and a softmax over the window turn the scores into attention weights,
and the output is the weighted sum of the T features. :class:`AttentionSmoother` is that
network (batched); :class:`ConditionSmoothing` holds one for the condition M(e, i) (dim C)
and one for the per-frame latent code l (dim L), as the paper applies it to both.

Window (:func:`neighbour_window`): frames ``[i - T//2, i - T//2 + T)`` of frame i's own clip
(AD-NeRF: ``[i - T/2, i + T/2)``), so frame i sits at index ``T // 2`` of the window.

Our choices (not the paper's, which gives no details):

* Clip edges: indices are clamped to the clip (the edge frame is repeated). AD-NeRF pads with
  zero features instead; zeros are not a plausible condition or latent code for us, and
  clamping never mixes frames of two clips that share one code table.
* Initialisation (``centre_init=True``, the default): the final linear layer T -> T starts
  with a zero weight matrix and a bias that puts ``centre_mass`` (0.9999) of the softmax on
  the centre index, so at switch-on (step 200k) the smoother returns the centre frame's
  value up to ~1e-4 of the window's spread: turning smoothing on late does not disturb the
  trained field. The price: gradients reach the convolutions only once the linear weight has
  moved off zero (one optimizer step), and the large bias must be unlearned where averaging
  helps (Adam moves it by about the learning rate per step). ``centre_init=False`` keeps
  PyTorch's default initialisation (nearly uniform weights at the start, as in AD-NeRF).
* Switch-on: :meth:`ConditionSmoothing.enabled` is true from step ``start_step`` (default
  200_000, 0-based steps: the first 200k steps are 0 .. 199_999) on.

Shapes: B batch (e.g. the one frame of a training step, or frames of a rendered video),
T window, C condition dim, L latent dim.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_WINDOW = 8  # AD-NeRF's smo_size
DEFAULT_START_STEP = 200_000  # appendix E: "after the first 200k iterations"
DEFAULT_CENTRE_MASS = 0.9999
CONV_CHANNELS = (16, 8, 4, 2, 1)  # AD-NeRF AudioAttNet
LEAKY_SLOPE = 0.02


def neighbour_window(frame: torch.Tensor, n_frames: torch.Tensor | int, window: int = DEFAULT_WINDOW) -> torch.Tensor:
    """Frame indices of the window around each frame, clamped to its clip.

    frame: ``(B,)`` long, index of each frame inside its own clip (0-based).
    n_frames: int (all frames from one clip, or clips of one length) or ``(B,)`` long, the
        length of each frame's clip.
    window: T, the window length.

    Returns ``(B, T)`` long: row b is ``frame[b] - T//2 + arange(T)`` clamped to
    ``[0, n_frames[b] - 1]``; column ``T // 2`` is ``frame[b]`` itself. The indices are
    within-clip; with :class:`~.conditioning.FrameLatentCodes` gather the latent window as
    ``codes(video[:, None].expand(-1, T), win)``.

    Raises ValueError for window < 1, a clip length < 1 or a frame outside its clip.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    frame = torch.as_tensor(frame)
    if frame.dtype.is_floating_point or frame.dtype == torch.bool:
        raise TypeError(f"frame must be an integer tensor, got {frame.dtype}")
    frame = frame.long()
    if frame.dim() != 1:
        raise ValueError(f"frame must have shape (B,), got {tuple(frame.shape)}")
    n = torch.as_tensor(n_frames, device=frame.device).long()
    if n.dim() == 0:
        n = n.expand(frame.shape[0])
    if n.shape != frame.shape:
        raise ValueError(f"n_frames must be an int or shape {tuple(frame.shape)}, got {tuple(n.shape)}")
    if (n < 1).any():
        raise ValueError("n_frames must be >= 1")
    if (frame < 0).any() or (frame >= n).any():
        raise ValueError("frame index outside its clip")
    offsets = torch.arange(window, device=frame.device) - window // 2
    idx = frame[:, None] + offsets[None, :]
    return torch.minimum(idx.clamp_min(0), (n - 1)[:, None])


def centre_bias(window: int, centre_mass: float = DEFAULT_CENTRE_MASS) -> float:
    """The logit b at index T//2 (0 elsewhere) for which softmax puts ``centre_mass`` there:
    e^b / (e^b + T - 1) = centre_mass."""
    if not 0.0 < centre_mass < 1.0:
        raise ValueError(f"centre_mass must be in (0, 1), got {centre_mass}")
    if window == 1:
        return 0.0
    return math.log(centre_mass * (window - 1) / (1.0 - centre_mass))


class AttentionSmoother(nn.Module):
    """AD-NeRF's AudioAttNet, batched: ``forward(seq (..., T, dim)) -> (..., dim)``.

    scores = LeakyReLU-conv stack over time (dim -> 16 -> 8 -> 4 -> 2 -> 1, kernel 3,
    padding 1), weights = softmax(Linear_{T->T}(scores)) over the window, output =
    sum_t weights_t * seq_t. See the module docstring for ``centre_init``.
    """

    def __init__(self, dim: int, window: int = DEFAULT_WINDOW, centre_init: bool = True,
                 centre_mass: float = DEFAULT_CENTRE_MASS):
        super().__init__()
        if dim < 1 or window < 1:
            raise ValueError(f"dim and window must be >= 1, got dim={dim}, window={window}")
        self.dim, self.window = dim, window
        layers: list[nn.Module] = []
        c_in = dim
        for c_out in CONV_CHANNELS:
            layers += [nn.Conv1d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=True),
                       nn.LeakyReLU(LEAKY_SLOPE)]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.linear = nn.Linear(window, window, bias=True)
        if centre_init:
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.zero_()
                self.linear.bias[window // 2] = centre_bias(window, centre_mass)

    def _check(self, seq: torch.Tensor) -> None:
        if seq.dim() < 2 or seq.shape[-2:] != (self.window, self.dim):
            raise ValueError(f"expected a sequence (..., {self.window}, {self.dim}), got {tuple(seq.shape)}")

    def attention(self, seq: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(..., T)`` (non-negative, summing to 1 over T) for
        ``seq (..., T, dim)``."""
        self._check(seq)
        lead = seq.shape[:-2]
        x = seq.reshape(-1, self.window, self.dim).transpose(1, 2)  # (N, dim, T)
        scores = self.conv(x).squeeze(1)  # (N, T)
        return torch.softmax(self.linear(scores), dim=-1).reshape(*lead, self.window)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        w = self.attention(seq)
        return (w.unsqueeze(-1) * seq).sum(-2)


class ConditionSmoothing(nn.Module):
    """Smoothing of the condition M(e, i) and of the latent code l (appendix E).

    ``forward(cond_seq (B, T, C), latent_seq (B, T, L)) -> (cond (B, C), latent (B, L))``
    with one :class:`AttentionSmoother` each. Build the sequences over
    :func:`neighbour_window`'s frames (the condition evaluated on each neighbour's
    expression with the clip's identity code). The trainer checks :meth:`enabled` and uses
    the centre frame's (unsmoothed) values before ``start_step``.
    """

    def __init__(self, cond_dim: int, latent_dim: int, window: int = DEFAULT_WINDOW,
                 start_step: int = DEFAULT_START_STEP, centre_init: bool = True,
                 centre_mass: float = DEFAULT_CENTRE_MASS):
        super().__init__()
        self.window, self.start_step = window, int(start_step)
        self.cond = AttentionSmoother(cond_dim, window, centre_init, centre_mass)
        # a model without latent codes (latent_dim 0) has nothing to smooth there
        self.latent = AttentionSmoother(latent_dim, window, centre_init, centre_mass) if latent_dim else None

    def enabled(self, step: int, start_step: int | None = None) -> bool:
        """True from (0-based) ``step >= start_step`` on; start_step defaults to this
        module's (200_000 unless configured)."""
        return step >= (self.start_step if start_step is None else start_step)

    def forward(self, cond_seq: torch.Tensor, latent_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.latent is None:  # (B, T, 0) -> (B, 0)
            return self.cond(cond_seq), latent_seq[..., 0, :]
        return self.cond(cond_seq), self.latent(latent_seq)

    def extra_repr(self) -> str:
        return f"window={self.window}, start_step={self.start_step}"
