"""Ray samplers: stratified (coarse) and importance / inverse-CDF (fine) sampling.

MI-NeRF app. E: "64 points per ray for the coarse volume and 128 points per ray for the
fine volume (hierarchical sampling strategy, Mildenhall et al. 2020)". As in NeRF, the fine
network is evaluated on the union of the 64 coarse and 128 new samples (192, sorted).
Ray parameters t are sorted along the last dimension everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

N_COARSE = 64
N_FINE = 128


def uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) of ``shape`` with ``like``'s dtype and device. With a (CPU) ``generator`` the
    draw is made on the host and copied (reproducible on every device); without one it is
    made on the device (no host round trip: the training step stays free of syncs)."""
    if generator is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    return torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int, perturb: bool = True,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """near, far (R,) -> t (R, n), NeRF's stratified sampling in [near, far].

    Without ``perturb``: n evenly spaced values including near and far. With it: one
    uniform sample in each interval between the midpoints of those values (the first and
    last intervals are half-bins ending at near / far).
    """
    s = torch.linspace(0.0, 1.0, n, dtype=near.dtype, device=near.device)
    t = near[:, None] * (1.0 - s) + far[:, None] * s  # (R, n)
    if not perturb:
        return t
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    upper = torch.cat([mids, t[:, -1:]], -1)
    lower = torch.cat([t[:, :1], mids], -1)
    u = uniform(t.shape, t, generator)
    return lower + (upper - lower) * u


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-transform sampling of the piecewise-constant PDF given by ``weights``.

    bins (R, B + 1) sorted bin edges, weights (R, B) >= 0 -> samples (R, n), sorted, within
    [bins[:, 0], bins[:, -1]]. As in NeRF's ``sample_pdf``: weights + 1e-5 (so an all-zero
    row samples uniformly), u = linspace(0, 1, n) when deterministic else uniform; we also
    sort the uniform u so the output is sorted in both modes.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (R, B + 1)
    cdf = cdf / cdf[:, -1:]  # exact 1 at the end
    R, B1 = cdf.shape
    if deterministic:
        u = torch.linspace(0.0, 1.0, n, dtype=cdf.dtype, device=cdf.device).expand(R, n)
    else:
        u = uniform((R, n), cdf, generator).sort(-1).values
    u = u.contiguous()
    inds = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (inds - 1).clamp(0, B1 - 1)
    above = inds.clamp(max=B1 - 1)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    frac = ((u - cdf_lo) / denom).clamp(0.0, 1.0)
    return bin_lo + frac * (bin_hi - bin_lo)


def importance_samples(t_coarse: torch.Tensor, weights: torch.Tensor, n: int, perturb: bool = True,
                       include_coarse: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """NeRF's hierarchical step: t_coarse (R, S), coarse weights (R, S) -> t (R, S + n) sorted
    (or (R, n) without ``include_coarse``), no gradient.

    Bins are the midpoints of the coarse samples; the first and last coarse weights are
    dropped (NeRF's ``weights[..., 1:-1]``) -- the last one is the background sample under
    the last-sample rule of :mod:`.render`, so the background never attracts fine samples.
    """
    with torch.no_grad():
        mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
        fine = sample_pdf(mids, weights[:, 1:-1], n, deterministic=not perturb, generator=generator)
        if not include_coarse:
            return fine
        return torch.sort(torch.cat([t_coarse, fine], -1), -1).values


class Sampler(ABC):
    """Interface: ``sample(near (R,), far (R,), t_prev (R, S') | None, weights_prev (R, S') | None)
    -> t (R, S)`` sorted ray parameters. Samplers that need no previous pass ignore the
    last two (an occupancy-grid sampler may need more state: it keeps it itself)."""

    @abstractmethod
    def sample(self, near: torch.Tensor, far: torch.Tensor, t_prev: torch.Tensor | None = None,
               weights_prev: torch.Tensor | None = None) -> torch.Tensor:
        ...


class StratifiedSampler(Sampler):
    """Coarse pass: ``n`` (64) stratified samples, jittered when ``perturb`` (training)."""

    def __init__(self, n: int = N_COARSE, perturb: bool = True, generator: torch.Generator | None = None):
        self.n, self.perturb, self.generator = n, perturb, generator

    def sample(self, near, far, t_prev=None, weights_prev=None):
        return stratified_samples(near, far, self.n, self.perturb, self.generator)


class PDFSampler(Sampler):
    """Fine pass: ``n`` (128) samples from the coarse weights, merged with the coarse ones."""

    def __init__(self, n: int = N_FINE, perturb: bool = True, include_coarse: bool = True,
                 generator: torch.Generator | None = None):
        self.n, self.perturb, self.include_coarse, self.generator = n, perturb, include_coarse, generator

    def sample(self, near, far, t_prev=None, weights_prev=None):
        if t_prev is None or weights_prev is None:
            raise ValueError("PDFSampler needs the previous pass's t and weights")
        return importance_samples(t_prev, weights_prev, self.n, self.perturb, self.include_coarse, self.generator)
