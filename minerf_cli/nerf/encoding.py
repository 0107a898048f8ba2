"""NeRF positional encoding (Mildenhall et al. 2020, eq. 4; MI-NeRF app. E, Table 5).

gamma(p) = (p, sin(2^0 p), cos(2^0 p), ..., sin(2^{L-1} p), cos(2^{L-1} p)), applied to
each coordinate, as in the reference NeRF code (frequencies 2^k without the factor pi,
input included). MI-NeRF uses L = 10 for the point x and L = 4 for the view direction v.
The caller is responsible for scaling x to about [-1, 1] (see ``field.VanillaDynamicField``).
"""

from __future__ import annotations

import torch
from torch import nn

X_FREQS = 10  # frequencies for the sample position x (Table 5)
DIR_FREQS = 4  # frequencies for the view direction v (Table 5)


def encoding_dim(in_dim: int, n_freqs: int, include_input: bool = True) -> int:
    """Output size of :func:`positional_encoding`: in_dim * (include_input + 2 * n_freqs)."""
    return in_dim * (int(include_input) + 2 * n_freqs)


def positional_encoding(x: torch.Tensor, n_freqs: int, include_input: bool = True) -> torch.Tensor:
    """(..., D) -> (..., D * (include_input + 2 * n_freqs)).

    Layout (NeRF's): [x, sin(x), cos(x), sin(2x), cos(2x), ..., sin(2^{L-1} x), cos(2^{L-1} x)],
    each block D wide.
    """
    freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)  # (L,)
    xb = x[..., None, :] * freqs[:, None]  # (..., L, D)
    enc = torch.stack([torch.sin(xb), torch.cos(xb)], -2)  # (..., L, 2, D)
    enc = enc.flatten(-3)  # (..., L * 2 * D)
    return torch.cat([x, enc], -1) if include_input else enc


class PositionalEncoding(nn.Module):
    """Module wrapper of :func:`positional_encoding`; ``out_dim`` is the encoded size."""

    def __init__(self, in_dim: int, n_freqs: int, include_input: bool = True):
        super().__init__()
        self.in_dim, self.n_freqs, self.include_input = in_dim, n_freqs, include_input
        self.out_dim = encoding_dim(in_dim, n_freqs, include_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_dim) -> (..., out_dim)
        return positional_encoding(x, self.n_freqs, self.include_input)
