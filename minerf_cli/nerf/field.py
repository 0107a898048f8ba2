"""Radiance fields: the :class:`Field` interface and MI-NeRF's vanilla dynamic field.

F_Theta : (M(e, i), l, x, v) -> (c, sigma)   (MI-NeRF eq. 3)

The condition ``cond`` is the output of a conditioning module (M, H, baseline, A1-A7) and
``latent`` the per-frame latent code l; both are per ray (R, C) / (R, L) or shared by all
rays (C,) / (L,) (one frame per step). A faster field (hash grid, tri-plane) only has to
implement the same ``forward``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from .encoding import DIR_FREQS, X_FREQS, PositionalEncoding

# ICT neutral-mesh bounds (cm, head space) are x +-12.4, y -19.3..14.5, z -9.2..13.1;
# padded by about 3 cm (hair, ears, expressions) this is the default head box.
HEAD_BOX_MIN = (-15.5, -22.5, -12.5)
HEAD_BOX_MAX = (15.5, 17.5, 16.0)


def per_sample(code: torch.Tensor, n_rays: int, n_samples: int) -> torch.Tensor:
    """Broadcast a per-ray (R, C) or shared (C,) code to per-sample (R, S, C) (a view)."""
    if code.dim() == 1:
        return code.expand(n_rays, n_samples, code.shape[-1])
    if code.dim() == 2 and code.shape[0] == n_rays:
        return code[:, None, :].expand(n_rays, n_samples, code.shape[-1])
    raise ValueError(f"code must be (C,) or ({n_rays}, C), got {tuple(code.shape)}")


class Field(nn.Module, ABC):
    """Interface of a conditioned radiance field.

    forward(x (R, S, 3) head-space points, viewdir (R, 3) unit ray directions (head space),
    cond (R, C) or (C,), latent (R, L) or (L,)) -> density (R, S) >= 0, rgb (R, S, 3) in [0, 1].
    """

    cond_dim: int
    latent_dim: int

    @abstractmethod
    def forward(self, x: torch.Tensor, viewdir: torch.Tensor, cond: torch.Tensor,
                latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def density(self, x: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Density only: x (P, 3), cond (P, C) or (C,), latent (P, L) or (L,) -> (P,) (the
        occupancy grid's query). This default runs ``forward`` with a fixed view direction;
        fields whose density does not depend on it may skip the colour branch."""
        view = torch.zeros_like(x)
        view[:, 2] = 1.0
        return self.forward(x[:, None, :], view, cond, latent)[0][:, 0]


class VanillaDynamicField(Field):
    """The NeRF MLP of MI-NeRF appendix E (after NeRFace / AD-NeRF / LipNeRF).

    * input h0 = [gamma_10(x_n); cond; latent], x_n = x mapped from the head box to [-1, 1]^3
      (NeRF's encoding assumes coordinates of order 1; head space is in cm);
    * trunk: 8 linear layers of 256 units, ReLU, h0 concatenated again to the output of
      layer index 4 (NeRF's ``skips=[4]``);
    * density head: one linear layer 256 -> 1, then NeRF's ReLU (``density_activation="relu"``,
      the default, so runs from before keep theirs) or softplus(raw - 1) (mip-NeRF's, what
      ``minerf train`` now asks for: :data:`minerf_cli.train.FIELD_OPTIONS`). With ReLU the
      field collapsed to zero density everywhere within the first steps on real clips, twice
      on an H100 (14.1 dB, the background alone, for 4000 steps even with He init): the rays
      around the head ask for transparency, every pre-activation goes negative and no
      gradient is left. softplus keeps a gradient at every point;
    * colour branch: linear 256 -> 256 feature (no activation, as in NeRF), concatenated
      with gamma_4(v), then 4 linear layers of 128 units with ReLU (NeRFace's 4 x 128
      ``layers_dir``), then 128 -> 3 with a sigmoid.

    The paper does not say where (M(e,i), l) enter the MLP; like NeRFace (which conditions
    on expression and latent code) they are concatenated with gamma(x) at the input and at
    the skip, not given to the colour branch.
    """

    def __init__(self, cond_dim: int, latent_dim: int, width: int = 256, depth: int = 8,
                 skips: tuple[int, ...] = (4,), color_width: int = 128, color_depth: int = 4,
                 x_freqs: int = X_FREQS, dir_freqs: int = DIR_FREQS,
                 box_min: tuple[float, float, float] = HEAD_BOX_MIN,
                 box_max: tuple[float, float, float] = HEAD_BOX_MAX, density_activation: str = "relu"):
        super().__init__()
        if density_activation not in ("softplus", "relu"):
            raise ValueError(f"density_activation must be softplus or relu, not {density_activation!r}")
        self.density_activation = density_activation
        self.cond_dim, self.latent_dim, self.skips = cond_dim, latent_dim, tuple(skips)
        self.pe_x = PositionalEncoding(3, x_freqs)
        self.pe_dir = PositionalEncoding(3, dir_freqs)
        bmin, bmax = torch.tensor(box_min, dtype=torch.float32), torch.tensor(box_max, dtype=torch.float32)
        self.register_buffer("box_center", (bmin + bmax) / 2)
        self.register_buffer("box_half", (bmax - bmin) / 2)
        in_dim = self.pe_x.out_dim + cond_dim + latent_dim
        layers = []
        for k in range(depth):
            n_in = in_dim if k == 0 else width + (in_dim if (k - 1) in self.skips else 0)
            layers.append(nn.Linear(n_in, width))
        self.trunk = nn.ModuleList(layers)
        self.density_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        color = []
        for k in range(color_depth):
            color.append(nn.Linear((width + self.pe_dir.out_dim) if k == 0 else color_width, color_width))
        self.color_layers = nn.ModuleList(color)
        self.rgb_head = nn.Linear(color_width, 3)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He (Kaiming) initialisation of the ReLU layers, zero biases.

        PyTorch's default Linear init shrinks the activations about 6-fold per ReLU layer,
        so after the 8-layer trunk the density head sees almost nothing and outputs its
        own bias at every point: when that bias is negative (half of all seeds), ReLU makes
        the density 0 everywhere, no gradient reaches it and the field never learns
        (measured: 4 real clips on an H100 stayed at the background-only 16 dB). With He
        init the activations keep their scale and the density is positive at about half
        the points from the start.
        """
        for layer in [*self.trunk, *self.color_layers]:
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Head space (cm) -> head box [-1, 1]^3, (..., 3) -> (..., 3)."""
        return (x - self.box_center) / self.box_half

    def forward(self, x, viewdir, cond, latent):
        dtype = torch.get_autocast_dtype("cuda") if x.is_cuda and torch.is_autocast_enabled("cuda") else None
        if dtype in (torch.bfloat16, torch.float16):  # mixed precision on CUDA: the fused layers
            return self.forward_fused(x, viewdir, cond, latent, dtype)
        R, S, _ = x.shape
        h0 = torch.cat([self.pe_x(self.normalize(x)), per_sample(cond, R, S), per_sample(latent, R, S)], -1)
        h = h0
        for k, layer in enumerate(self.trunk):
            h = torch.relu(layer(h))
            if k in self.skips:
                h = torch.cat([h, h0], -1)
        raw = self.density_head(h)[..., 0].float()
        density = torch.relu(raw) if self.density_activation == "relu" else F.softplus(raw - 1.0)  # (R, S)
        d = self.pe_dir(viewdir)[:, None, :].expand(R, S, self.pe_dir.out_dim)
        c = torch.cat([self.feature(h), d], -1)
        for layer in self.color_layers:
            c = torch.relu(layer(c))
        rgb = torch.sigmoid(self.rgb_head(c))  # (R, S, 3)
        return density, rgb

    def forward_fused(self, x, viewdir, cond, latent, dtype: torch.dtype):
        """``forward`` through :func:`.fused_mlp.linear_relu` in ``dtype`` (what mixed
        precision on CUDA runs): every ReLU layer's bias and ReLU in its matmul, the
        inputs of odd width (h0, the skip, the colour branch) padded with zero columns to a
        multiple of 8, consecutive layers joined by :class:`.fused_mlp.ReluLink` (the RGB
        head too), the linear feature layer folded into the first colour layer and the
        density head run beside it (:func:`.fused_mlp.linear_relu_with_head`), gamma(x)
        written padded in one pass and the concatenated inputs ([h; gamma(x)] at the skip,
        [h; gamma(d)] with gamma(d) per ray) by the layers that read them
        (:mod:`.fused_inputs`). Same math as ``forward``; tests compare both (on CPU in
        float64)."""
        from .fused_inputs import encode_points
        from .fused_mlp import ReluLink, linear, linear_relu, linear_relu_with_head, padded_width

        R, S, _ = x.shape
        P = R * S

        def padded(parts: list[torch.Tensor]) -> torch.Tensor:  # (P, k_i) pieces -> (P, padded width)
            k = sum(p.shape[-1] for p in parts)
            pad = padded_width(k) - k
            return torch.cat([p.to(dtype) for p in parts] + ([x.new_zeros(P, pad, dtype=dtype)] if pad else []), -1)

        n_pe = self.pe_x.out_dim
        # codes shared by every sample (one frame per step, the paper's): their part of the
        # input and skip layers is the same for all points, W_code [cond; l], so it joins the
        # bias instead of being copied to every sample (exact; the matmuls get narrower)
        shared = cond.dim() == 1 and latent.dim() == 1
        code = torch.cat([cond, latent]) if shared else None
        pe = encode_points(self.normalize(x).reshape(P, 3), self.pe_x.n_freqs, padded_width(n_pe) if shared else n_pe,
                           dtype)
        h0 = pe if shared else padded([pe, per_sample(cond, R, S).reshape(P, -1), per_sample(latent, R, S).reshape(P, -1)])
        h, tail, after = h0, None, None
        for k, layer in enumerate(self.trunk):
            # each trunk layer's output feeds only the next (ReluLink); the last one's only the
            # first colour layer, which runs the density head beside it. A layer after a skip
            # reads [h; h0] (h0 its input's tail)
            link = ReluLink(layer.out_features)
            takes_h0 = k == 0 or tail is not None
            if shared and takes_h0:  # input [h_prev; x-encoding; padding], codes from column `start` on
                start = (0 if tail is None else h.shape[1]) + n_pe
                W = layer.weight
                h = linear_relu(h, W[:, :start], layer.bias + F.linear(code.to(W.dtype), W[:, start:]), after, link,
                                tail=tail)
            else:
                h = linear_relu(h, layer.weight, layer.bias, after, link, tail=tail)
            after = link
            tail = h0 if k in self.skips else None
        if tail is not None:  # a skip after the last trunk layer: its output is [h; h0]
            h, after = torch.cat([h, tail], -1), None
        # gamma(d) once per ray (zero-padded so that the colour layer's input is a multiple of 8)
        n_d = self.pe_dir.out_dim
        d = F.pad(self.pe_dir(viewdir), (0, padded_width(h.shape[1] + n_d) - h.shape[1] - n_d)).to(dtype)
        # the feature layer has no activation, so it folds into the first colour layer:
        # W0 [W_f h + b_f; d] + b0 = (W0a W_f) h + W0b d + (W0a b_f + b0), one (P, 256) pass fewer
        first = self.color_layers[0]
        W0a, W0b = first.weight[:, :self.feature.out_features], first.weight[:, self.feature.out_features:]
        W0 = torch.cat([W0a @ self.feature.weight, W0b], 1)
        b0 = first.bias + W0a @ self.feature.bias
        link = ReluLink(first.out_features)
        c, raw = linear_relu_with_head(h, W0, b0, self.density_head.weight, self.density_head.bias, after, link,
                                       tail=d, tail_div=S)
        after = link
        for layer in self.color_layers[1:]:
            link = ReluLink(layer.out_features)
            c = linear_relu(c, layer.weight, layer.bias, after, link)
            after = link
        out = torch.promote_types(dtype, torch.float32)  # density and colour in float32 (float64 stays)
        raw = raw[:, 0].to(out)
        density = torch.relu(raw) if self.density_activation == "relu" else F.softplus(raw - 1.0)
        rgb = torch.sigmoid(linear(c, self.rgb_head.weight, self.rgb_head.bias, after).to(out))
        return density.reshape(R, S), rgb.reshape(R, S, 3)
