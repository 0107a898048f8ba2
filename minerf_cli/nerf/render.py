"""Volume rendering along rays and MI-NeRF's training loss.

Quadrature of eq. (4) (NeRF): alpha_k = 1 - exp(-sigma_k delta_k), delta_k = t_{k+1} - t_k
(the last delta is "infinite", 1e10), T_k = prod_{j<k} (1 - alpha_j), w_k = T_k alpha_k,
C = sum_k w_k c_k.

Background rule (MI-NeRF app. E): "We also assume that the last sample on each ray lies on
the background and takes the corresponding RGB color (Guo et al., 2021; Chatziagapi et
al., 2023). We use the original background per frame." Implemented exactly as that
rule states: the last sample's colour is the background pixel and its opacity is 1, so
it receives all the remaining transmittance, w_last = T_last, and C = sum_{k<S} w_k c_k +
T_last * background. (AD-NeRF's code gets the same up to float rounding from
relu(sigma) + 1e-6 times a 1e10 last delta.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LAMBDA_LATENT = 0.01  # lambda_l of eq. (5)
LAMBDA_IDENTITY = 1e-4  # lambda_i of eq. (5)
FAR_DELTA = 1e10


def deltas_from_t(t: torch.Tensor, far_delta: float = FAR_DELTA) -> torch.Tensor:
    """t (R, S) sorted -> delta (R, S): t_{k+1} - t_k, the last one ``far_delta``."""
    d = t[..., 1:] - t[..., :-1]
    return torch.cat([d, torch.full_like(t[..., :1], far_delta)], -1)


def alphas_from_densities(density: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """density, delta (R, S) -> alpha = 1 - exp(-density * delta) (R, S)."""
    return -torch.expm1(-density * deltas)


def transmittance(alphas: torch.Tensor) -> torch.Tensor:
    """alpha (R, S) -> T (R, S), T_k = prod_{j<k} (1 - alpha_j) (exclusive; T_0 = 1)."""
    ones = torch.ones_like(alphas[..., :1])
    return torch.cumprod(torch.cat([ones, 1.0 - alphas[..., :-1]], -1), -1)


def weights_from_alphas(alphas: torch.Tensor) -> torch.Tensor:
    """alpha (R, S) -> w = T * alpha (R, S)."""
    return alphas * transmittance(alphas)


def transmittance_from_depths(tau: torch.Tensor) -> torch.Tensor:
    """Optical depths tau = density * delta (R, S) -> T (R, S), T_k = exp(-sum_{j<k} tau_j).

    The same T as :func:`transmittance` of alpha = 1 - exp(-tau), as a sum rather than a
    product: cumprod's gradient reads back on the host whether any factor is 0 (a sync,
    which a CUDA graph cannot hold), cumsum's does not. The last tau is left out of the
    sum (with the far delta of 1e10 it would swamp the others in float32)."""
    return torch.exp(-torch.cat([torch.zeros_like(tau[..., :1]), torch.cumsum(tau[..., :-1], -1)], -1))


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # (R, 3) composite colour (background included under the rule)
    depth: torch.Tensor  # (R,) expected t, sum w_k t_k (the background sample counts at its t)
    opacity: torch.Tensor  # (R,) accumulated opacity of the field samples (background excluded)
    weights: torch.Tensor  # (R, S) w_k (the last one is the background's under the rule)


def volume_render(density: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor,
                  background: torch.Tensor | None = None, ray_norm: torch.Tensor | None = None) -> RenderOutput:
    """Composite samples along rays.

    density (R, S), rgb (R, S, 3), t (R, S) sorted ray parameters, background (R, 3) or
    (3,) or None, ray_norm (R,) |direction| when directions are not unit (deltas are then
    scaled to distances) -> :class:`RenderOutput`.

    With ``background``: the last sample's colour is replaced by it and its alpha set to 1
    (module docstring); opacity = sum of the other weights = 1 - T_last. Without it: plain
    NeRF (last delta 1e10), opacity = sum of all weights.
    """
    deltas = deltas_from_t(t)
    if ray_norm is not None:
        deltas = deltas * ray_norm[..., None]
    tau = density * deltas
    alphas = -torch.expm1(-tau)
    if background is not None:
        alphas = torch.cat([alphas[..., :-1], torch.ones_like(alphas[..., -1:])], -1)
        bg = background.expand(rgb.shape[0], 3) if background.dim() == 1 else background
        rgb = torch.cat([rgb[:, :-1, :], bg[:, None, :].to(rgb.dtype)], 1)
    weights = alphas * transmittance_from_depths(tau)
    color = (weights[..., None] * rgb).sum(-2)
    depth = (weights * t).sum(-1)
    opacity = (weights[..., :-1] if background is not None else weights).sum(-1)
    return RenderOutput(color, depth, opacity, weights)


def code_norm(code: torch.Tensor) -> torch.Tensor:
    """||code||_2 of a (D,) code, or the mean of the row norms of a (B, D) batch."""
    return code.norm(dim=-1).mean()


def minerf_loss(rgb: torch.Tensor, rgb_gt: torch.Tensor, latent: torch.Tensor, identity: torch.Tensor,
                rgb_coarse: torch.Tensor | None = None, lambda_latent: float = LAMBDA_LATENT,
                lambda_identity: float = LAMBDA_IDENTITY) -> dict[str, torch.Tensor]:
    """L = L_c + lambda_l L_l + lambda_i L_i  (eq. 5), lambda_l = 0.01, lambda_i = 1e-4.

    rgb, rgb_gt (R, 3) (fine pass), rgb_coarse (R, 3) or None, latent (L,) or (B, L),
    identity (d,) or (B, d) -> dict of scalars total, photometric, latent, identity.

    L_c = ||C_hat - C||^2 implemented as NeRF's mean squared error over rays and channels
    (``img2mse``), summed over the coarse and fine passes as in NeRF's hierarchical
    training ("optimizing a coarse and a fine model", sec. 3.3); L_l = ||l||_2,
    L_i = ||i||_2 (plain, not squared, norms as eq. 5 writes them).
    """
    photometric = F.mse_loss(rgb, rgb_gt)
    if rgb_coarse is not None:
        photometric = photometric + F.mse_loss(rgb_coarse, rgb_gt)
    l_latent, l_identity = code_norm(latent), code_norm(identity)
    total = photometric + lambda_latent * l_latent + lambda_identity * l_identity
    return {"total": total, "photometric": photometric, "latent": l_latent, "identity": l_identity}


def mask_loss(opacity: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Mean |opacity - head mask| over rays: opacity (R,), head (R,) bool -> scalar.

    Under the per-frame background rule (module docstring) a pixel outside the head mask
    has its own colour as background, so the field has nothing to draw there (opacity 0
    is right), and a pixel inside it has the background plate behind the head, which the
    head must cover (opacity 1). The photometric loss alone does not ask for either: a
    faint haze around the head, or a half-transparent head whose colour makes up for the
    plate showing through, fit the pixels as well. Both make rendering slow (rays that never
    become opaque are marched to the end of the box, every sample evaluated) and a haze can
    show on another person's expression. This term asks for the opacity the rule implies."""
    return (opacity - head.to(opacity.dtype)).abs().mean()


def distortion_loss(weights: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mip-NeRF 360's distortion loss (eq. 15), mean over rays: weights (R, S) of samples
    at sorted positions t (R, S) -> scalar.

    With s = (t - t_0) / (t_{S-1} - t_0) (each ray's samples mapped to [0, 1]) and
    delta_k = s_{k+1} - s_k (the last one 0):
    L = sum_{i,j} w_i w_j |s_i - s_j| + 1/3 sum_i w_i^2 delta_i, computed in O(S) as
    2 sum_i w_i (s_i W_{<i} - (ws)_{<i}) (exclusive prefix sums) + the second term.
    Small when a ray's weight sits in one narrow place (a hard surface), large when it is
    spread along the ray (haze, a soft head): rendering can stop such rays early."""
    s = (t - t[:, :1]) / (t[:, -1:] - t[:, :1]).clamp_min(1e-6)
    w_before = torch.cumsum(weights, 1) - weights
    ws_before = torch.cumsum(weights * s, 1) - weights * s
    pairs = 2.0 * (weights * (s * w_before - ws_before)).sum(1)
    delta = torch.cat([s[:, 1:] - s[:, :-1], torch.zeros_like(s[:, :1])], 1)
    return (pairs + (weights**2 * delta).sum(1) / 3.0).mean()
