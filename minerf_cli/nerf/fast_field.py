"""A fast conditioned field: hash-grid encoding + small MLPs (Instant-NGP / RAD-NeRF style).

Same interface as :class:`~.field.VanillaDynamicField` (MI-NeRF's conditioning kept):

    forward(x (R, S, 3) head-space points (cm), viewdir (R, 3) unit, cond (R, C) or (C,),
            latent (R, L) or (L,)) -> density (R, S) >= 0, rgb (R, S, 3) in [0, 1], float32.

* x is mapped from the head box to [0, 1]^3 and encoded by :class:`~.hashgrid.HashGrid`
  (h, L_grid * F features); points outside the box get density 0 (their rgb is computed
  but weighs nothing);
* density MLP: [h; cond; latent] -> ``hidden`` ReLU -> ``hidden`` ReLU -> 1 + ``geo_features``;
  density = trunc_exp(first output + density_bias) (:class:`TruncExp`; the bias, -1 as in
  nerfstudio's nerfacto, starts the field less opaque), the rest are geometry features;
* ``cond_attention`` (ER-NeRF's region attention): the condition enters as
  sigmoid(A h) * cond, gated per position by a linear map A of the position's grid features,
  so each region of the head picks the parts of M(e, i) that move it (the mouth the jaw's);
* colour MLP: [geo features; gamma_4(viewdir)] -> ``color_hidden`` ReLU -> ``color_hidden``
  ReLU -> 3, sigmoid.

The first layer of each MLP is one ``nn.Linear`` on the concatenation, as written above, but
it is evaluated split: W [h; cond; latent] + b = W_h h + (W_c cond + W_l latent + b), the
bracket once per ray (or once per step for shared codes) and broadcast over the samples
with :func:`~.field.per_sample`; likewise the viewdir part of the colour MLP. Same result
as the concatenation, without the (R, S, C + L) per-sample copy and its matmul.

Mixed precision: under ``torch.autocast("cuda", dtype=torch.bfloat16)`` the hash table and
the interpolation stay float32 (autocast disabled inside the grid), the linear layers run
in bf16, density and rgb are computed from float32 casts and returned as float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoding import DIR_FREQS, PositionalEncoding
from .field import HEAD_BOX_MAX, HEAD_BOX_MIN, Field, per_sample
from .hashgrid import HashGrid

TRUNC_EXP_CLAMP = 15.0  # gradient of trunc_exp uses exp(min(x, 15)) (torch-ngp's choice)


def _at_least_f32(t: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 -> float32; float32 and float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class TruncExp(torch.autograd.Function):
    """exp with a clamped gradient (Instant-NGP's density activation).

    forward: exp(x) (in float32, or float64 for float64 x); backward: grad * exp(clamp(x, -15, 15)), so a large raw
    density cannot produce an overflowing gradient early in training.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = _at_least_f32(x)
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-TRUNC_EXP_CLAMP, TRUNC_EXP_CLAMP))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """(...) -> exp(x) (...) float32, gradient clamped (:class:`TruncExp`)."""
    return TruncExp.apply(x)


class FastField(Field):
    """Hash-grid field with MI-NeRF conditioning (module docstring).

    Parameter groups for the optimiser: :meth:`param_groups` (grid table vs MLPs).
    """

    def __init__(self, cond_dim: int, latent_dim: int,
                 box_min: tuple[float, float, float] = HEAD_BOX_MIN,
                 box_max: tuple[float, float, float] = HEAD_BOX_MAX,
                 levels: int = 16, features: int = 2, log2_table: int = 19, base_res: int = 16,
                 max_res: int = 1024, hidden: int = 64, geo_features: int = 15, color_hidden: int = 64,
                 density_bias: float = -1.0, cond_attention: bool = False):
        super().__init__()
        self.cond_dim, self.latent_dim, self.geo_features = cond_dim, latent_dim, geo_features
        bmin, bmax = torch.tensor(box_min, dtype=torch.float32), torch.tensor(box_max, dtype=torch.float32)
        self.register_buffer("box_min", bmin)
        self.register_buffer("box_size", bmax - bmin)
        self.grid = HashGrid(levels, features, log2_table, base_res, max_res)
        self.pe_dir = PositionalEncoding(3, DIR_FREQS)
        # density MLP on [h; cond; latent]
        self.density_in = nn.Linear(self.grid.out_dim + cond_dim + latent_dim, hidden)
        self.density_hidden = nn.Linear(hidden, hidden)
        self.density_out = nn.Linear(hidden, 1 + geo_features)
        self.density_bias = float(density_bias)
        # region attention (ER-NeRF): a per-position gate on the condition, sigmoid(A h(x)) * cond
        self.cond_attention = bool(cond_attention)
        self.attention = nn.Linear(self.grid.out_dim, cond_dim) if self.cond_attention else None
        # colour MLP on [geo; gamma_4(v)]
        self.color_in = nn.Linear(geo_features + self.pe_dir.out_dim, color_hidden)
        self.color_hidden = nn.Linear(color_hidden, color_hidden)
        self.color_out = nn.Linear(color_hidden, 3)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Head space (cm) -> head box [0, 1]^3, (..., 3) -> (..., 3) float32 (the box's dtype)."""
        return (x.to(self.box_min.dtype) - self.box_min) / self.box_size

    def param_groups(self) -> list[dict]:
        """[{"params": [hash table], "name": "grid"}, {"params": MLP weights, "name": "mlp"}]."""
        grid = list(self.grid.parameters())
        ids = {id(p) for p in grid}
        return [{"params": grid, "name": "grid"},
                {"params": [p for p in self.parameters() if id(p) not in ids], "name": "mlp"}]

    def ray_codes(self, cond: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """The per-ray part of the first density layer: cond (R, C) or (C,), latent (R, L) or
        (L,) -> W_c cond + W_l latent + b, (R, hidden) or (hidden,) (just b with region
        attention, whose condition term is per sample)."""
        Dh, C = self.grid.out_dim, self.cond_dim
        W, b = self.density_in.weight, self.density_in.bias
        codes = b if self.attention is not None else F.linear(cond, W[:, Dh:Dh + C], b)
        if self.latent_dim:  # (no latent codes: no zero-width matmul, which CUDA kernels may not take)
            codes = codes + F.linear(latent, W[:, Dh + C:])
        return codes

    def dir_codes(self, viewdir: torch.Tensor) -> torch.Tensor:
        """The per-ray part of the first colour layer: viewdir (R, 3) -> W_v gamma_4(v) + b (R, color_hidden)."""
        Wc, bc = self.color_in.weight, self.color_in.bias
        return F.linear(self.pe_dir(viewdir.to(self.box_min.dtype)), Wc[:, self.geo_features:], bc)

    def _density_features(self, x, cond, latent):
        """x (R, S, 3) -> density (R, S) float32, density MLP output (R, S, 1 + geo)."""
        R, S, _ = x.shape
        xn = self.normalize(x)  # (R, S, 3)
        inside = ((xn >= 0) & (xn <= 1)).all(-1)  # (R, S)
        h = self.grid(xn)  # (R, S, L*F) float32
        # first density layer, split over [h | cond | latent] (module docstring)
        Dh, C = self.grid.out_dim, self.cond_dim
        W = self.density_in.weight
        a = F.linear(h, W[:, :Dh]) + per_sample(self.ray_codes(cond, latent), R, S)  # (R, S, hidden)
        if self.attention is not None:  # the gated condition is per sample: (R, S, C)
            gate = torch.sigmoid(self.attention(h))
            a = a + F.linear(per_sample(cond, R, S) * gate, W[:, Dh:Dh + C])
        a = torch.relu(self.density_hidden(torch.relu(a)))
        out = self.density_out(a)  # (R, S, 1 + geo)
        density = torch.where(inside, trunc_exp(out[..., 0] + self.density_bias), 0.0)  # (R, S) float32
        return density, out

    def density(self, x, cond, latent):
        """x (P, 3), cond (P, C) or (C,), latent (P, L) or (L,) -> density (P,) (no colour branch)."""
        return self._density_features(x[:, None, :], cond, latent)[0][:, 0]

    def forward(self, x, viewdir, cond, latent):
        R, S, _ = x.shape
        density, out = self._density_features(x, cond, latent)
        # first colour layer, split over [geo | gamma(v)]
        c = F.linear(out[..., 1:], self.color_in.weight[:, :self.geo_features]) + per_sample(self.dir_codes(viewdir), R, S)
        c = torch.relu(self.color_hidden(torch.relu(c)))
        rgb = torch.sigmoid(_at_least_f32(self.color_out(c)))  # (R, S, 3)
        return density, rgb
