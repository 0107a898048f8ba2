"""The MI-NeRF model: conditioning + codes + field(s) + sampler + volume rendering.

One object holds every learned part of a run (papers/mi-nerf.txt sec. 3, app. E):

* ``conditioning`` -- M(e, i) (or H, the baseline, A1-A7), :mod:`.conditioning`;
* ``identity`` -- one identity code per training video (dim = expression dim);
* ``latent`` -- one latent code per frame of every training video;
* ``coarse`` / ``fine`` -- the fields (vanilla: two networks as in NeRF's hierarchical
  sampling; a fast field may be shared by both passes, the coarse pass then running
  without gradient and only guiding the fine samples);
* ``smoothing`` -- optional self-attention over neighbouring frames (app. E), used once
  the trainer switches it on.

The model renders rays given per-ray (or shared) condition and latent codes; which frame
a ray belongs to is the trainer's business. Shapes: R rays, S samples, C condition dim,
L latent dim, d expression dim.
"""

from __future__ import annotations

from dataclasses import asdict, astuple, dataclass, field as dc_field

import torch
from torch import nn

from .conditioning import DEFAULT_LATENT_DIM, DEFAULT_RANK, FrameLatentCodes, IdentityCodes, make_conditioning
from .field import HEAD_BOX_MAX, HEAD_BOX_MIN, Field, VanillaDynamicField
from .rays import near_far_box
from . import march_triton
from .marching import MarchStats, march_render
from .occupancy import OccupancyGrid
from .packing import kept_samples, packed_field, visible_samples
from .render import volume_render
from .samplers import importance_samples, stratified_samples

FIELDS = ("vanilla", "fast")
MARCH_CHUNK = {"cuda": 262144, "cpu": 65536}  # rays per marching call (~10 KB of temporaries per ray at 256 steps)
MARCH_CHUNK_FUSED = 1 << 20  # with the fused kernels (~1 KB per ray at 192 steps): fewer rounds, fewer host syncs


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model before loading its tensors (stored in config.json)."""

    module: str = "m"
    expr_dim: int = 53
    latent_dim: int = DEFAULT_LATENT_DIM
    rank: int = DEFAULT_RANK
    field: str = "vanilla"
    n_coarse: int = 64
    n_fine: int = 128
    shared_field: bool = False  # one field for both passes (coarse pass without gradient)
    box_min: tuple = HEAD_BOX_MIN
    box_max: tuple = HEAD_BOX_MAX
    frames_per_video: list = dc_field(default_factory=list)
    smoothing_window: int = 8
    field_options: dict = dc_field(default_factory=dict)
    occupancy_resolution: int = 0  # cells per axis of the occupancy grid (0: none; runs before it had none)
    march_steps: int = 192  # uniform marching steps across the head box's diagonal (rendering with the grid;
    # runs made before 2026-11-22: 256, kept in their config)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        cfg = cls(**known)
        cfg.box_min, cfg.box_max = tuple(cfg.box_min), tuple(cfg.box_max)
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def make_field(cfg: ModelConfig, cond_dim: int) -> Field:
    """The field named by ``cfg.field`` ("vanilla" | "fast")."""
    if cfg.field == "vanilla":
        return VanillaDynamicField(cond_dim, cfg.latent_dim, box_min=cfg.box_min, box_max=cfg.box_max,
                                   **cfg.field_options)
    if cfg.field == "fast":
        from .fast_field import FastField

        return FastField(cond_dim, cfg.latent_dim, box_min=cfg.box_min, box_max=cfg.box_max, **cfg.field_options)
    raise ValueError(f"unknown field {cfg.field!r}; expected one of {', '.join(FIELDS)}")


class MINeRF(nn.Module):
    """All learned parts of a multi-identity NeRF (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.frames_per_video:
            raise ValueError("a model needs at least one video (frames_per_video)")
        self.cfg = cfg
        self.conditioning = make_conditioning(cfg.module, cfg.expr_dim, cfg.expr_dim, rank=cfg.rank)
        cond_dim = self.conditioning.out_dim
        self.identity = IdentityCodes(len(cfg.frames_per_video), cfg.expr_dim)
        self.latent = FrameLatentCodes(list(cfg.frames_per_video), cfg.latent_dim)
        self.fine = make_field(cfg, cond_dim)
        self.coarse = None if cfg.shared_field else make_field(cfg, cond_dim)
        self.smoothing = None
        if cfg.smoothing_window > 1:
            from .smoothing import ConditionSmoothing

            self.smoothing = ConditionSmoothing(cond_dim, cfg.latent_dim, window=cfg.smoothing_window)
        self.occupancy = None
        if cfg.occupancy_resolution > 0:
            self.occupancy = OccupancyGrid(cfg.box_min, cfg.box_max, cfg.occupancy_resolution, step=self.march_step)
        # the head box as tensors on the model's device (a tuple would be copied up at every step)
        self.register_buffer("head_box", torch.tensor([cfg.box_min, cfg.box_max], dtype=torch.float32), persistent=False)
        self.last_march: MarchStats | None = None
        self.march_options: dict = {}  # march_render keywords (per_round, min_transmittance) for rendering

    @property
    def march_step(self) -> float:
        """Marching step (cm): the head box's diagonal / ``march_steps``."""
        diag = sum((b - a) ** 2 for a, b in zip(self.cfg.box_min, self.cfg.box_max)) ** 0.5
        return diag / self.cfg.march_steps

    def set_march_steps(self, steps: int) -> None:
        """Render with ``steps`` marching steps across the head box (a rendering setting:
        fewer is faster and coarser); the occupancy grid's threshold follows the new step."""
        if steps < 8:
            raise ValueError("march steps must be >= 8")
        self.cfg.march_steps = int(steps)
        if self.occupancy is not None:
            self.occupancy.set_threshold(self.occupancy.alpha_threshold, self.march_step)

    # -- codes -----------------------------------------------------------------------------
    def condition(self, expression: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """expression (..., d), video (...,) long -> M(e, i) (..., C)."""
        return self.conditioning(expression, self.identity(video))

    def add_video(self, n_frames: int, generator: torch.Generator | None = None) -> int:
        """A new identity code and ``n_frames`` latent codes (personalization of an unseen
        person, sec. 3.4) -> the new video index. Rebuild the optimizer afterwards."""
        self.identity.grow(1, generator)
        index = self.latent.add_video(n_frames, generator)
        self.cfg.frames_per_video = [*self.cfg.frames_per_video, int(n_frames)]
        return index

    def smooth(self, cond_seq: torch.Tensor, latent_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention over a window: cond_seq (B, T, C), latent_seq (B, T, L) -> (B, C), (B, L)."""
        if self.smoothing is None:
            raise RuntimeError("this model was built without smoothing (smoothing_window <= 1)")
        return self.smoothing(cond_seq, latent_seq)

    def density(self, x: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Density of the final (fine) field: x (P, 3), cond (P, C) or (C,), latent (P, L) or (L,) -> (P,)."""
        return self.fine.density(x, cond, latent)

    # -- rendering -------------------------------------------------------------------------
    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor,
                    background: torch.Tensor, perturb: bool = True,
                    pack: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Render rays (R, 3) in head space with codes cond (R, C) or (C,), latent (R, L) or
        (L,) over background colours (R, 3) -> dict rgb (R, 3), rgb_coarse (R, 3) or absent,
        depth (R,), opacity (R,), weights (R, S) and sample positions t (R, S) (of the fine
        pass; the last weight is the background's).

        Rays that miss the head box render the background exactly (their interval is empty).
        ``pack`` (coarse, fine capacities): run the fields only at samples in occupied cells
        of the occupancy grid, and the fine field only at samples the coarse pass sees
        (:mod:`.packing`); the dict then has ``packed`` (2,), the number of samples each
        pass kept.
        """
        if pack is not None and self.occupancy is None:
            raise RuntimeError("packed rendering needs the model's occupancy grid")
        box = self.head_box.to(origins.dtype)
        near, far, hit = near_far_box(origins, dirs, box[0], box[1])
        t_coarse = stratified_samples(near, far, self.cfg.n_coarse, perturb=perturb)
        out: dict[str, torch.Tensor] = {}
        coarse = self.coarse if self.coarse is not None else self.fine
        counts = []

        def run(field, t, capacity, visible=None):
            points = origins[:, None] + dirs[:, None] * t[..., None]
            if capacity is None:
                density, rgb = field(points, dirs, cond, latent)
                return density.float(), rgb.float()
            keep = kept_samples(self.occupancy, points)
            if visible is not None:
                keep &= visible
            density, rgb, count = packed_field(field, points, dirs, cond, latent, keep, capacity)
            counts.append(count)
            return density, rgb

        with torch.set_grad_enabled(torch.is_grad_enabled() and self.coarse is not None):
            res_c = volume_render(*run(coarse, t_coarse, pack and pack[0]), t_coarse, background)
        if self.coarse is not None:
            out["rgb_coarse"] = res_c.rgb
        t = importance_samples(t_coarse, res_c.weights.detach(), self.cfg.n_fine, perturb=perturb)
        visible = visible_samples(t_coarse, res_c.weights.detach(), t) if pack is not None else None
        res = volume_render(*run(self.fine, t, pack and pack[1], visible), t, background)
        if counts:
            out["packed"] = torch.stack(counts)
        # rays that miss the box: exactly the background (their samples all sit at one t)
        miss = ~hit
        rgb_out = torch.where(miss[:, None], background.expand_as(res.rgb), res.rgb)
        out.update(rgb=rgb_out, depth=res.depth, opacity=torch.where(miss, torch.zeros_like(res.opacity), res.opacity),
                   weights=res.weights, t=t)
        if "rgb_coarse" in out:
            out["rgb_coarse"] = torch.where(miss[:, None], background.expand_as(res.rgb), out["rgb_coarse"])
        return out

    @torch.no_grad()
    def render_rays_marched(self, origins: torch.Tensor, dirs: torch.Tensor, cond: torch.Tensor,
                            latent: torch.Tensor, background: torch.Tensor, min_t: torch.Tensor | None = None,
                            first_hit: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render rays through the occupancy grid (:mod:`.marching`: empty space skipped,
        rays stop once opaque), no gradient: origins, dirs (R, 3), cond (R, C) or (C,),
        latent (R, L) or (L,), background (R, 3) -> dict rgb (R, 3), opacity (R,).
        ``min_t`` (R,): start each ray there at the earliest (space before it is taken as
        empty); ``first_hit`` (R,): filled as :func:`.marching.march_render` does.
        ``self.last_march`` keeps the sample counts of the call."""
        if self.occupancy is None:
            raise RuntimeError("this model has no occupancy grid (trained before minerf had one)")
        box = self.render_box("grid")
        if box is None:  # no occupied cell: every ray shows its background
            self.last_march = MarchStats(0, 0, 0, 0)
            if first_hit is not None:
                first_hit.fill_(float("inf"))
            return {"rgb": background.float(), "opacity": torch.zeros(origins.shape[0], device=origins.device)}
        near, far, hit = near_far_box(origins, dirs, *box)
        if min_t is not None:
            near = torch.maximum(near, min_t)
        far = torch.where(hit & (far > near), far, near)
        rgb, opacity, self.last_march = march_render(self.fine, self.occupancy, origins, dirs, near, far, cond,
                                                     latent, background, self.march_step, self.cfg.march_steps,
                                                     first_hit=first_hit, **self.march_options)
        return {"rgb": rgb, "opacity": opacity}

    def render_box(self, sampler: str = "auto") -> tuple[list[float], list[float]] | None:
        """The head-space box rendering has to look at (a host sync when marching): the
        bounds of the occupancy grid's occupied cells when rendering through the grid (None
        when none is occupied: every ray shows the background), else the field's head box."""
        if self.uses_marching(sampler):
            return self.occupancy.occupied_box()
        return list(self.cfg.box_min), list(self.cfg.box_max)

    def uses_marching(self, sampler: str = "auto") -> bool:
        """Whether rendering goes through the occupancy grid: ``sampler`` "grid", or "auto"
        when the model has a grid that training has updated at least once (a grid that
        never was knows nothing: "auto" then keeps the training-time sampler); "pdf" forces
        the training-time coarse + fine sampling."""
        if sampler not in ("auto", "grid", "pdf"):
            raise ValueError(f"unknown sampler {sampler!r}; expected auto, grid or pdf")
        if sampler == "grid" and self.occupancy is None:
            raise RuntimeError("this model has no occupancy grid (trained before minerf had one); use the pdf sampler")
        if sampler == "auto":
            return self.occupancy is not None and int(self.occupancy.updates) > 0
        return sampler == "grid"

    @torch.no_grad()
    def render_pixels(self, origins: torch.Tensor, dirs: torch.Tensor, cond: torch.Tensor, latent: torch.Tensor,
                      background: torch.Tensor, chunk: int = 8192, sampler: str = "auto",
                      min_t: torch.Tensor | None = None, first_hit: torch.Tensor | None = None) -> torch.Tensor:
        """Render rays (N, 3) in chunks of ``chunk`` rays (no gradient, no jitter) with codes
        (N, C) / (N, L) per ray or shared (C,) / (L,) over background (N, 3) -> (N, 3) float32.
        With the occupancy grid (:meth:`uses_marching`) chunks are at least ``MARCH_CHUNK``
        (``MARCH_CHUNK_FUSED`` with the fused kernels of :mod:`.march_triton`)
        rays, ``self.last_march`` sums the sample counts of all of them, and ``min_t`` /
        ``first_hit`` (N,) are passed on to :meth:`render_rays_marched` (the pdf sampler
        takes neither)."""
        marched = self.uses_marching(sampler)
        if not marched and (min_t is not None or first_hit is not None):
            raise ValueError("min_t / first_hit need the occupancy-grid renderer")
        if marched:
            fused = march_triton.supports(self.fine, origins.device)
            chunk = max(chunk, MARCH_CHUNK_FUSED if fused else MARCH_CHUNK.get(origins.device.type, MARCH_CHUNK["cpu"]))
        out = torch.empty(origins.shape[0], 3, device=origins.device)
        stats = []
        for s in range(0, origins.shape[0], chunk):
            sl = slice(s, s + chunk)
            c = cond if cond.dim() == 1 else cond[sl]
            lat = latent if latent.dim() == 1 else latent[sl]
            bg = background[sl].float()
            if marched:
                out[sl] = self.render_rays_marched(origins[sl], dirs[sl], c, lat, bg,
                                                   None if min_t is None else min_t[sl],
                                                   None if first_hit is None else first_hit[sl])["rgb"]
                stats.append(astuple(self.last_march))
            else:
                out[sl] = self.render_rays(origins[sl], dirs[sl], c, lat, bg, perturb=False)["rgb"].float()
        if stats:  # the counts of the whole call
            self.last_march = MarchStats(*(sum(v) for v in zip(*stats)))
        return out
