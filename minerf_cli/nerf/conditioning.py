"""Conditioning of the dynamic NeRF on expression e and identity code i (MI-NeRF sec. 3.1-3.2).

Every module maps ``e (..., d_e)`` and ``i (..., d_i)`` (leading dims broadcast against each
other) to a condition ``(..., out_dim)`` that the field takes next to the per-frame latent
code l (eq. 3: F(M(e, i), l, x, v) -> (c, sigma)). Following the paper's formulas, no
module has bias terms. The paper's default sizes: d = d_e = d_i (footnote 1: "defining the
identity vector with the same dimension as the expression vector was sufficient"),
o = d (appendix B(a) tries o = 256 > d), k = 8 for M and d = k = o for H.

Names accepted by :func:`make_conditioning`:

=========  ====================================================================  ==========
name       definition                                                            source
=========  ====================================================================  ==========
m          C[(U1 e) * (U2 i)] + W2 e + W3 i, rank k (default 8)                  eq. (1)
h2, h3,    H(e,i) = C x_N, x_n = x_{n-1} + (U[n,1] e + U[n,2] i) * x_{n-1},      eq. (2)
h4 (h=h2)  x_1 = U[1,1] e + U[1,2] i, N = 2..4, k = o = d by default
baseline   [e; i] (plain concatenation, "Baseline NeRF", no parameters)          sec. 4.2
a1         W2 e + W3 i                                                           Table 1
a2         (e * i) + W2 e + W3 i                                                 Table 1
a3         W1 (e * i) + W1 e + W1 i   (one shared W1; see AblationA3)            Table 1
a4         W1 (e * i)                                                            Table 1
a5         (W2 e) * (W3 i) + W2 e + W3 i   (W2, W3 shared)                       Table 1
a6         W1 (e * i) + W2 e + W3 i                                              Table 1, B
a7         W x2 e x3 i, W in R^{o x d x d} (full multiplicative tensor)          Table 1, (7)
=========  ====================================================================  ==========

``*`` is the Hadamard product. The text of Table 1 available to us (papers/mi-nerf.txt) is
an OCR with lost subscripts; the readings of A3, A5 and A6 are argued in their docstrings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_RANK = 8  # k of M (sec. 3.2.1: "M with k = 8 leads to the best disentanglement")
DEFAULT_LATENT_DIM = 32  # per-frame latent code size (NeRFace's; the paper's value is not legible)
NAMES = ("m", "h", "h2", "h3", "h4", "baseline", "a1", "a2", "a3", "a4", "a5", "a6", "a7")


def _linear(n_in: int, n_out: int) -> nn.Linear:
    return nn.Linear(n_in, n_out, bias=False)


class Conditioning(nn.Module):
    """Interface: ``forward(e (..., expr_dim), i (..., id_dim)) -> (..., out_dim)``."""

    expr_dim: int
    id_dim: int
    out_dim: int

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        super().__init__()
        self.expr_dim, self.id_dim, self.out_dim = expr_dim, id_dim, out_dim

    def forward(self, e: torch.Tensor, i: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def broadcast_leading(e: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand ``e (..., d_e)`` and ``i (..., d_i)`` to common leading dims (views, no copy)."""
    lead = torch.broadcast_shapes(e.shape[:-1], i.shape[:-1])
    return e.expand(*lead, e.shape[-1]), i.expand(*lead, i.shape[-1])


def _require_equal(name: str, **dims: int) -> None:
    if len(set(dims.values())) != 1:
        got = ", ".join(f"{k}={v}" for k, v in dims.items())
        raise ValueError(f"conditioning {name!r} needs equal dimensions ({got})")


class MultiplicativeModule(Conditioning):
    """M(e, i) = C[(U1 e) * (U2 i)] + W2 e + W3 i  (eq. 1).

    U1 (k, d_e), U2 (k, d_i), C (o, k), W2 (o, d_e), W3 (o, d_i); k = rank (8 in the
    paper). Appendix A.1 derives it as the rank-k CP decomposition of the full bilinear
    tensor W x2 e x3 i plus the linear terms (eqs. 7-10).
    """

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int, rank: int = DEFAULT_RANK):
        super().__init__(expr_dim, id_dim, out_dim)
        self.rank = rank
        self.U1 = _linear(expr_dim, rank)
        self.U2 = _linear(id_dim, rank)
        self.C = _linear(rank, out_dim)
        self.W2 = _linear(expr_dim, out_dim)
        self.W3 = _linear(id_dim, out_dim)

    def forward(self, e: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self.C(self.U1(e) * self.U2(i)) + self.W2(e) + self.W3(i)


class HighDegreeModule(Conditioning):
    """H(e, i) = C x_N  (eq. 2), N = degree in 2..4.

    x_1 = U[1,1] e + U[1,2] i;  x_n = x_{n-1} + (U[n,1] e + U[n,2] i) * x_{n-1}, n = 2..N.
    U[n,1] (k, d_e), U[n,2] (k, d_i), C (o, k). The paper sets d = k = o (= 79 there), so
    ``rank`` defaults to d_e. For N = 2 this expands (appendix A.2, eq. 11) to
    C{(U21 e)*(U11 e)} + C{(U21 e)*(U12 i)} + C{(U22 i)*(U11 e)} + C{(U22 i)*(U12 i)}
    + C U11 e + C U12 i.
    """

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int, degree: int = 2, rank: int | None = None):
        if not 2 <= degree <= 4:
            raise ValueError(f"H degree must be 2..4, got {degree}")
        k = expr_dim if rank is None else rank
        super().__init__(expr_dim, id_dim, out_dim)
        self.degree, self.rank = degree, k
        self.Ue = nn.ModuleList(_linear(expr_dim, k) for _ in range(degree))  # U[n,1]
        self.Ui = nn.ModuleList(_linear(id_dim, k) for _ in range(degree))  # U[n,2]
        self.C = _linear(k, out_dim)

    def forward(self, e: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        x = self.Ue[0](e) + self.Ui[0](i)
        for n in range(1, self.degree):
            x = x + (self.Ue[n](e) + self.Ui[n](i)) * x
        return self.C(x)


class ConcatBaseline(Conditioning):
    """"Baseline NeRF" (sec. 4.2, Table 1 row 1): [e; i], the inputs simply concatenated
    (the field then concatenates l, gamma(x) as identity-specific NeRFs do). No parameters;
    out_dim = d_e + d_i."""

    def __init__(self, expr_dim: int, id_dim: int):
        super().__init__(expr_dim, id_dim, expr_dim + id_dim)

    def forward(self, e: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return torch.cat(broadcast_leading(e, i), -1)


class AblationA1(Conditioning):
    """(A1) M(e, i) = W2 e + W3 i. Sec. 4.2: "We started by just learning a simple mapping
    of the e and i vectors, using W2 and W3 matrices (A1)"."""

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        super().__init__(expr_dim, id_dim, out_dim)
        self.W2, self.W3 = _linear(expr_dim, out_dim), _linear(id_dim, out_dim)

    def forward(self, e, i):
        return self.W2(e) + self.W3(i)


class AblationA2(Conditioning):
    """(A2) M(e, i) = (e * i) + W2 e + W3 i: the raw Hadamard product plus linear terms
    (needs d_e = d_i = o)."""

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        _require_equal("a2", expr_dim=expr_dim, id_dim=id_dim, out_dim=out_dim)
        super().__init__(expr_dim, id_dim, out_dim)
        self.W2, self.W3 = _linear(expr_dim, out_dim), _linear(id_dim, out_dim)

    def forward(self, e, i):
        return e * i + self.W2(e) + self.W3(i)


class AblationA3(Conditioning):
    """(A3) M(e, i) = W1 (e * i) + W1 e + W1 i = W1 (e * i + e + i), ONE matrix W1 (o, d).

    AMBIGUOUS: the OCR of Table 1 reads "Wy (ex1i) + Wie + Wit" for A3 and
    "W (e x i) + Wae + Wsi" for A6, i.e. both are a matrix times (e * i) plus linear terms.
    Appendix B names the three d x d matrices of A6 W1, W2, W3, so A6 = W1(e*i) + W2 e + W3 i;
    for A3 to be a different row, its linear terms must reuse W1 (the OCR's "Wi" is how the
    subscript 1 is read elsewhere, e.g. "Wy" = W1 in A4). Needs d_e = d_i.
    """

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        _require_equal("a3", expr_dim=expr_dim, id_dim=id_dim)
        super().__init__(expr_dim, id_dim, out_dim)
        self.W1 = _linear(expr_dim, out_dim)

    def forward(self, e, i):
        return self.W1(e * i) + self.W1(e) + self.W1(i)


class AblationA4(Conditioning):
    """(A4) M(e, i) = W1 (e * i): a learned map of the Hadamard product only, no linear
    terms (needs d_e = d_i)."""

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        _require_equal("a4", expr_dim=expr_dim, id_dim=id_dim)
        super().__init__(expr_dim, id_dim, out_dim)
        self.W1 = _linear(expr_dim, out_dim)

    def forward(self, e, i):
        return self.W1(e * i)


class AblationA5(Conditioning):
    """(A5) M(e, i) = (W2 e) * (W3 i) + W2 e + W3 i, W2 (o, d_e) and W3 (o, d_i) SHARED by
    the product and the linear terms.

    AMBIGUOUS: the OCR reads "(Whe) x (W3i) + Wae + Wi"; the same glyphs ("Whe", "Wi") stand
    for W2 e and W3 i in A1, so we read the matrices as shared. (Unshared matrices with
    an output map C would be M with k = d.)
    """

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        super().__init__(expr_dim, id_dim, out_dim)
        self.W2, self.W3 = _linear(expr_dim, out_dim), _linear(id_dim, out_dim)

    def forward(self, e, i):
        a, b = self.W2(e), self.W3(i)
        return a * b + a + b


class AblationA6(Conditioning):
    """(A6) M(e, i) = W1 (e * i) + W2 e + W3 i, three separate matrices (W1 (o, d),
    W2 (o, d_e), W3 (o, d_i)).

    Appendix B ("Full Rank Matrices") plots the singular values of "our learned W1, W2,
    W3 in R^{d x d} of the (A6) variant"; sec. 4.2: "(A6) can be derived from (A7), using
    similar arguments to Appendix A" -- indeed eq. (10) with identity factors A = B = I and
    C = W1. See AblationA3 for how A3 is told apart. Needs d_e = d_i.
    """

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        _require_equal("a6", expr_dim=expr_dim, id_dim=id_dim)
        super().__init__(expr_dim, id_dim, out_dim)
        self.W1 = _linear(expr_dim, out_dim)
        self.W2, self.W3 = _linear(expr_dim, out_dim), _linear(id_dim, out_dim)

    def forward(self, e, i):
        return self.W1(e * i) + self.W2(e) + self.W3(i)


class AblationA7(Conditioning):
    """(A7) M(e, i) = W x2 e x3 i with a full tensor W (o, d_e, d_i) (eq. 7; "inspired by
    Wang et al., uses W in R^{d x d x d}, requiring significantly more parameters than M
    (d^3 vs d^2)"). Table 1 writes no linear terms for A7 (eq. 8 would add W2 e + W3 i).
    out[..., p] = sum_{a, b} W[p, a, b] e[..., a] i[..., b].
    """

    def __init__(self, expr_dim: int, id_dim: int, out_dim: int):
        super().__init__(expr_dim, id_dim, out_dim)
        bound = 1.0 / math.sqrt(expr_dim * id_dim)  # like nn.Linear's init with fan-in d_e * d_i
        self.W = nn.Parameter(torch.empty(out_dim, expr_dim, id_dim).uniform_(-bound, bound))

    def forward(self, e, i):
        e, i = broadcast_leading(e, i)
        return torch.einsum("pab,...a,...b->...p", self.W, e, i)


_ABLATIONS = {"a1": AblationA1, "a2": AblationA2, "a3": AblationA3, "a4": AblationA4,
              "a5": AblationA5, "a6": AblationA6, "a7": AblationA7}


def make_conditioning(name: str, expr_dim: int, id_dim: int, out_dim: int | None = None,
                      rank: int | None = None) -> Conditioning:
    """Build a conditioning module by name (m | h | h2 | h3 | h4 | baseline | a1 .. a7).

    out_dim defaults to expr_dim (o = d as in the paper) and is ignored by ``baseline``
    (whose output is d_e + d_i). rank: k of M (default 8) or of H (default d_e); ignored
    by the other modules.
    """
    key = name.lower()
    o = expr_dim if out_dim is None else out_dim
    if key == "m":
        return MultiplicativeModule(expr_dim, id_dim, o, DEFAULT_RANK if rank is None else rank)
    if key in ("h", "h2", "h3", "h4"):
        return HighDegreeModule(expr_dim, id_dim, o, degree=int(key[1:] or 2), rank=rank)
    if key == "baseline":
        return ConcatBaseline(expr_dim, id_dim)
    if key in _ABLATIONS:
        return _ABLATIONS[key](expr_dim, id_dim, o)
    raise ValueError(f"unknown conditioning {name!r}; expected one of {', '.join(NAMES)}")


class CodeBook(nn.Module):
    """A table of learned codes (nn.Embedding) that can grow (new videos / frames when an
    unseen person is added at personalization, sec. 3.4).

    Codes are "randomly initialized embeddings that are learned during training" (sec. 3.1):
    N(0, init_std^2). ``forward(index (...,) long) -> (..., dim)``.
    """

    def __init__(self, count: int, dim: int, init_std: float = 0.1):
        super().__init__()
        self.dim, self.init_std = dim, init_std
        self.table = nn.Embedding(count, dim)
        nn.init.normal_(self.table.weight, 0.0, init_std)

    @property
    def count(self) -> int:
        return self.table.num_embeddings

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        if self.dim == 0:  # no codes (e.g. --latent-dim 0): no zero-width lookup, which CUDA may not take
            return self.table.weight.new_zeros((*index.shape, 0))
        return self.table(index)

    def grow(self, extra: int, generator: torch.Generator | None = None) -> range:
        """Append ``extra`` new random codes (old ones kept bit-exactly); returns their indices.
        The optimizer must be rebuilt (or given the new parameter) afterwards."""
        old = self.table.weight.data
        new = torch.randn(extra, self.dim, generator=generator, dtype=old.dtype).to(old.device) * self.init_std
        table = nn.Embedding(self.count + extra, self.dim, device=old.device, dtype=old.dtype)
        table.weight.data.copy_(torch.cat([old, new]))
        start = self.count
        self.table = table
        return range(start, start + extra)


class IdentityCodes(CodeBook):
    """One identity code i in R^{d_e} per training video (sec. 3.1, footnote 1: same
    dimension as the expression). ``forward(video (...,) long) -> (..., d_e)``."""


class FrameLatentCodes(CodeBook):
    """One latent code l per frame per video (sec. 3.1), stored in one table with per-video
    offsets. ``forward(video (...,) long, frame (...,) long) -> (..., dim)``."""

    def __init__(self, frames_per_video: list[int], dim: int = DEFAULT_LATENT_DIM, init_std: float = 0.1):
        super().__init__(int(sum(frames_per_video)), dim, init_std)
        self.register_buffer("offsets", torch.tensor([0, *frames_per_video], dtype=torch.long).cumsum(0)[:-1])
        self.register_buffer("lengths", torch.tensor(list(frames_per_video), dtype=torch.long))

    def index(self, video: torch.Tensor, frame: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Row of (video, frame) in the table. ``check`` raises IndexError for a frame outside
        its video (on a GPU that reads the indices back: the training step passes False)."""
        video, frame = torch.as_tensor(video, device=self.offsets.device), torch.as_tensor(frame, device=self.offsets.device)
        if check and ((frame < 0).any() or (frame >= self.lengths[video]).any()):
            raise IndexError("frame index outside its video")
        return self.offsets[video] + frame

    def forward(self, video: torch.Tensor, frame: torch.Tensor, check: bool = True) -> torch.Tensor:  # type: ignore[override]
        return super().forward(self.index(video, frame, check))

    def add_video(self, n_frames: int, generator: torch.Generator | None = None) -> int:
        """Append codes for a new video of ``n_frames``; returns its video index."""
        start = self.count
        self.grow(n_frames, generator)
        self.offsets = torch.cat([self.offsets, self.offsets.new_tensor([start])])
        self.lengths = torch.cat([self.lengths, self.lengths.new_tensor([n_frames])])
        return len(self.lengths) - 1
