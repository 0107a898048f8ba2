"""The training loop shared by `train` and `personalize` (MI-NeRF app. E).

Per step: ``frames_per_step`` random training frames (default 1, the paper's), ``rays``
rays in all (2048), 95% of them inside the frame's head box; coarse + fine rendering over
the frame's own background; L = |C - C_gt|^2 + 0.01 |l| + 1e-4 |i| (eq. 5); Adam
(0.9, 0.999, 1e-8), learning rate decaying exponentially from 5e-4 to 5e-5 over the run.
After ``smooth_after`` steps the condition and latent code of a frame pass through the
self-attention over its neighbours (app. E: after 200k of 400k steps).

The step has no host-device synchronisation: frames are drawn on the host from a
per-step seeded generator, pixels on the device; losses are accumulated on the device
and read every ``log_every`` steps, when non-finite or exploding losses stop the run (the
last checkpoint on disk is from before the failure and is kept). On CUDA the forward and
backward pass of each step (:func:`batch_loss`) is replayed as a CUDA graph
(:mod:`.step_runner`; capturing one would fail on a sync); the batch (:func:`draw_batch`) and
the optimizer step run outside it.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .clips import Clip
from .devices import autocast
from .errors import MinerfError
from .nerf.model import MINeRF
from .nerf.occupancy import to_device
from .nerf.packing import PackBudget
from .nerf.rays import head_rays, sample_box_pixels
from .nerf.render import distortion_loss, mask_loss, minerf_loss
from .output import log, progress_bar
from .step_runner import StepRunner
from . import runs

METRICS_HEADER = ["step", "wall_s", "lr", "loss", "psnr", "test_psnr", "train_s", "occupied", "kept"]


@dataclass
class TrainConfig:
    steps: int = 20000
    rays: int = 2048
    frames_per_step: int = 1
    inside_fraction: float = 0.95
    mouth_fraction: float = 0.0  # share of the rays drawn inside the frame's mouth box (clips.mouth_boxes)
    mask_weight: float = 0.0  # weight of the opacity-vs-head-mask term in the loss (nerf.render.mask_loss)
    distortion_weight: float = 0.0  # weight of Mip-NeRF 360's distortion loss (nerf.render.distortion_loss)
    lr: float = 5e-4
    lr_final: float = 5e-5
    grid_lr_scale: float = 20.0  # a fast field's grid learns at lr * this (Instant-NGP uses 1e-2)
    smooth_after: int = -1  # step at which smoothing starts; -1: half the steps (200k of 400k); 0: off
    checkpoint_every: int = 1000
    val_every: int = 1000
    log_every: int = 50
    test_frames: int = -1  # held-out frames per identity for the final PSNR (-1: all)
    precision: str = "auto"
    seed: int = 0
    explode_factor: float = 50.0
    grid_every: int = 16  # steps between occupancy-grid updates (models with a grid)
    grid_warmup: int = 256  # first update at this step (the grid is all-occupied before)
    pack: bool = False  # after the first grid update, run the fields only at samples in occupied cells (nerf.packing;
    # off by default: on real clips 68-84% of the samples were kept and the gathers cost more than they saved)
    cuda_graphs: bool = True  # on CUDA, replay each step's forward and backward as a CUDA graph (step_runner)

    def smoothing_start(self) -> int | None:
        if self.smooth_after == 0:
            return None
        return self.steps // 2 if self.smooth_after < 0 else self.smooth_after

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return asdict(self)


class TrainingDiverged(MinerfError):
    pass


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Exponential decay lr * (lr_final / lr) ** (step / steps)."""
    return cfg.lr * (cfg.lr_final / cfg.lr) ** (min(step, cfg.steps) / max(cfg.steps, 1))


def param_groups(model: MINeRF, cfg: TrainConfig, freeze_conditioning: bool = False) -> list[dict]:
    """Adam parameter groups with an ``lr_scale`` each: a fast field's grid gets
    ``grid_lr_scale``; with ``freeze_conditioning`` the conditioning module is left out
    (and its parameters stop requiring gradients)."""
    grid, rest = [], []
    fields = [f for f in (model.coarse, model.fine) if f is not None]
    grid_ids = set()
    for f in fields:
        if hasattr(f, "param_groups"):
            for g in f.param_groups():
                if g.get("name") == "grid":
                    grid_ids.update(id(p) for p in g["params"])
    frozen = set()
    if freeze_conditioning:
        for p in model.conditioning.parameters():
            p.requires_grad_(False)
            frozen.add(id(p))
    for p in model.parameters():
        if id(p) in frozen or not p.requires_grad or p.numel() == 0:  # (no latent codes: an empty table)
            continue
        (grid if id(p) in grid_ids else rest).append(p)
    groups = [{"params": rest, "lr_scale": 1.0}]
    if grid:
        groups.append({"params": grid, "lr_scale": cfg.grid_lr_scale})
    return groups


def make_optimizer(groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, **kwargs)


def ray_boxes(model: MINeRF, clip: Clip) -> torch.Tensor:
    """(N, 4) per-frame rectangles that training rays are drawn from: the image of the
    field's head box. (MI-NeRF draws 95% of the rays inside "the detected bounding box of
    the head"; under our per-frame background the field has to learn everything its box
    covers -- the neck and the backdrop around the head too -- so the box it draws from is
    the projection of the field's own box, which contains the head's.)"""
    from .clips import projected_boxes

    H, W = clip.size
    return projected_boxes(clip.K, clip.camera_from_head, model.cfg.box_min, model.cfg.box_max, H, W)


def mouth_ray_boxes(clip: Clip) -> torch.Tensor:
    """(N, 4) per-frame mouth rectangles (:func:`clips.mouth_boxes`) on the clip's device."""
    from .clips import mouth_boxes

    H, W = clip.size
    return torch.from_numpy(mouth_boxes(clip.landmarks, H, W)).to(clip.device)


def frame_pixels(n: int, box: torch.Tensor, mouth: torch.Tensor | None, H: int, W: int,
                 cfg: TrainConfig) -> torch.Tensor:
    """(n, 2) training pixels of one frame: round(n * cfg.mouth_fraction) inside the mouth
    box (4,) when given, the rest as MI-NeRF draws them (cfg.inside_fraction in the head box)."""
    n_mouth = int(round(n * cfg.mouth_fraction)) if mouth is not None else 0
    ij = sample_box_pixels(n - n_mouth, box, H, W, cfg.inside_fraction)
    if n_mouth:
        ij = torch.cat([ij, sample_box_pixels(n_mouth, mouth, H, W, 1.0)])
    return ij


@dataclass
class Batch:
    """One step's rays and the frames they come from, on the device (F frames, R rays,
    T = the smoothing window, 1 without smoothing)."""

    origins: torch.Tensor  # (R, 3) head space
    dirs: torch.Tensor  # (R, 3)
    gt: torch.Tensor  # (R, 3) float in [0, 1]
    background: torch.Tensor  # (R, 3)
    heads: torch.Tensor | None  # (R,) bool, the head mask (with the mask loss)
    video: torch.Tensor  # (F,) long
    frames: torch.Tensor  # (F, T) long: each frame's window, the frame itself in the middle
    expression: torch.Tensor  # (F, T, d)
    per: tuple[int, ...]  # rays of each frame

    _TENSORS = ("origins", "dirs", "gt", "background", "heads", "video", "frames", "expression")

    def tensors(self) -> list[torch.Tensor]:
        """The batch's tensors (those that are not None), in a fixed order."""
        return [t for t in (getattr(self, k) for k in self._TENSORS) if t is not None]

    def with_tensors(self, values: list[torch.Tensor]) -> "Batch":
        """The same batch made of ``values`` (in the order of :meth:`tensors`)."""
        it = iter(values)
        return Batch(**{k: None if getattr(self, k) is None else next(it) for k in self._TENSORS}, per=self.per)


def upload(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """Integers (n,) -> int64 tensor on ``device``, without a sync: a copy from pinned memory
    does not wait for the GPU (a plain one waits for the previous step to finish)."""
    return to_device(torch.from_numpy(np.asarray(values, dtype=np.int64)), device)


def draw_batch(model: MINeRF, sources: list[tuple[int, Clip]], weights: np.ndarray, cfg: TrainConfig,
               rng: np.random.Generator, smooth: bool, boxes: list[torch.Tensor],
               mouths: list[torch.Tensor] | None = None) -> Batch:
    """Draw a step's frames (on the host, from ``rng``) and rays (on the device) -> :class:`Batch`.
    ``boxes``: per source, the (N, 4) rectangles of :func:`ray_boxes`; ``mouths``: per
    source, the (N, 4) of :func:`mouth_ray_boxes` (used when cfg.mouth_fraction > 0)."""
    F = cfg.frames_per_step
    per = tuple(cfg.rays // F + (1 if k < cfg.rays % F else 0) for k in range(F))
    T = model.cfg.smoothing_window if smooth and model.smoothing is not None else 1
    origins, dirs, gts, bgs, heads, videos, windows, exprs = [], [], [], [], [], [], [], []
    for k in range(F):
        s = int(rng.choice(len(sources), p=weights))
        video, clip = sources[s]
        n = int(rng.choice(clip.train_idx))
        H, W = clip.size
        ij = frame_pixels(per[k], boxes[s][n], mouths[s][n] if mouths else None, H, W, cfg)
        o, d = head_rays(clip.K, clip.camera_from_head[n], ij)
        origins.append(o)
        dirs.append(d)
        gts.append(clip.frame(n)[ij[:, 0], ij[:, 1]].float() / 255.0)
        bgs.append(clip.background_at(n, ij))
        if cfg.mask_weight:
            heads.append(clip.head_at(n, ij))
        # the window of nerf.smoothing.neighbour_window, made on the host
        win = np.clip(n - T // 2 + np.arange(T), 0, clip.n_frames - 1) if T > 1 else np.array([n])
        videos.append(video)
        windows.append(win)
        exprs.append(clip.expression[n:n + 1] if T == 1 else clip.expression[upload(win, clip.expression.device)])
    index = upload(np.concatenate([np.asarray(videos), *windows]), origins[0].device)
    return Batch(torch.cat(origins), torch.cat(dirs), torch.cat(gts), torch.cat(bgs),
                 torch.cat(heads) if heads else None, index[:F], index[F:].reshape(F, T), torch.stack(exprs), per)


def batch_codes(model: MINeRF, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> condition (C,) or (R, C), latent (L,) or (R, L) per ray (shared when the step has
    one frame), and the frames' latent (F, L) and identity (F, d) codes for the loss. With a
    window (T > 1) the codes pass through the model's self-attention smoothing."""
    F, T = batch.frames.shape
    identity = model.identity(batch.video)  # (F, d)
    cond = model.conditioning(batch.expression, identity[:, None].expand(F, T, -1))  # (F, T, C)
    latent = model.latent(batch.video[:, None].expand(F, T), batch.frames, check=False)  # (F, T, L)
    if T > 1:
        cond, latent = model.smooth(cond, latent)
    else:
        cond, latent = cond[:, 0], latent[:, 0]
    if F == 1:
        return cond[0], latent[0], latent, identity
    return (torch.cat([c.expand(r, -1) for c, r in zip(cond, batch.per)]),
            torch.cat([lat.expand(r, -1) for lat, r in zip(latent, batch.per)]), latent, identity)


def batch_loss(model: MINeRF, batch: Batch, cfg: TrainConfig, device: torch.device, precision: str,
               pack: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Forward and backward pass of one batch (no optimizer step) -> (loss, photometric
    mse, kept samples (2,) of the packed passes or None), on the device. ``pack``: run the
    fields only at samples in occupied cells, with these capacities (:mod:`.nerf.packing`)."""
    cond, latent, lats, ids = batch_codes(model, batch)
    with autocast(device, precision):
        out = model.render_rays(batch.origins, batch.dirs, cond, latent, batch.background, perturb=True, pack=pack)
    gt = batch.gt
    losses = minerf_loss(out["rgb"].float(), gt, lats, ids, out.get("rgb_coarse"))
    if cfg.mask_weight:
        losses["total"] = losses["total"] + cfg.mask_weight * mask_loss(out["opacity"].float(), batch.heads)
    if cfg.distortion_weight:  # over the field's samples (the last one is the background's)
        losses["total"] = losses["total"] + cfg.distortion_weight * distortion_loss(
            out["weights"][:, :-1].float(), out["t"][:, :-1].float())
    losses["total"].backward()
    mse = torch.mean((out["rgb"].detach().float() - gt) ** 2)
    return losses["total"].detach(), mse, out.get("packed")


class MetricsLog:
    """RUN/metrics.csv, appended (a resumed run continues the same file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(METRICS_HEADER)
        with open(self.path, newline="") as fh:
            self.header = next(csv.reader(fh), METRICS_HEADER)  # a resumed older run keeps its columns

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(["" if row.get(k) is None else row[k] for k in self.header])

    def truncate(self, upto_step: int) -> None:
        """Drop rows after ``upto_step`` (written after the checkpoint a resumed run restarts from)."""
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [rows[0]] + [r for r in rows[1:] if r and r[0] and int(r[0]) <= upto_step]
        if len(keep) != len(rows):
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerows(keep)

    def last_wall(self, upto_step: int) -> float:
        """wall_s of the last row at or before ``upto_step`` (0 if none): resumed runs add to it."""
        wall = 0.0
        with open(self.path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row["step"] and int(row["step"]) <= upto_step and row["wall_s"]:
                    wall = float(row["wall_s"])
        return wall


class GridUpdater:
    """Refreshes a model's occupancy grid during training (:mod:`.nerf.occupancy`): every
    ``cfg.grid_every`` steps from ``cfg.grid_warmup`` on, each cell is evaluated under the
    codes of a random training frame of a random identity."""

    def __init__(self, model: MINeRF, sources: list[tuple[int, Clip]], cfg: TrainConfig, device: torch.device,
                 precision: str):
        self.model, self.cfg, self.device, self.precision = model, cfg, device, precision
        dev = model.identity.table.weight.device
        self.videos = torch.cat([torch.full((len(c.train_idx),), v, dtype=torch.long) for v, c in sources]).to(dev)
        self.frames = torch.cat([torch.as_tensor(c.train_idx, dtype=torch.long) for _, c in sources]).to(dev)
        self.expressions = torch.cat([c.expression[torch.as_tensor(c.train_idx, dtype=torch.long)].cpu()
                                      for _, c in sources]).to(dev)

    def due(self, step: int) -> bool:
        return step >= self.cfg.grid_warmup and (step - self.cfg.grid_warmup) % self.cfg.grid_every == 0

    @torch.no_grad()
    def update(self, step: int) -> None:
        grid = self.model.occupancy
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000003 + step)
        n = grid.resolution ** 3
        pick = to_device(torch.randint(len(self.videos), (n,), generator=gen), self.videos.device)
        with autocast(self.device, self.precision):
            cond = self.model.condition(self.expressions[pick], self.videos[pick])
            latent = self.model.latent(self.videos[pick], self.frames[pick], check=False)
            grid.update(self.model.density, cond, latent, generator=gen)


def validation_images(model: MINeRF, run: Path, step: int, sources: list[tuple[int, Clip]], smooth: bool,
                      max_ids: int = 4) -> float | None:
    """Render one held-out frame per identity (up to ``max_ids``) -> RUN/val/*.png
    (reference | render); returns their mean face-crop PSNR."""
    import cv2

    from .metrics import psnr
    from .rendering import render_clip_frames

    out_dir = Path(run) / "val"
    out_dir.mkdir(exist_ok=True)
    values = []
    model.eval()
    for video, clip in sources[:max_ids]:
        frames = clip.test_idx[:1] if len(clip.test_idx) else clip.train_idx[-1:]
        for n, img, box in render_clip_frames(model, video, clip, frames, smooth):
            ref = clip.frame(n).cpu().numpy()
            cv2.imwrite(str(out_dir / f"step_{step:07d}_{clip.name}.png"), cv2.cvtColor(np.concatenate([ref, img], 1), cv2.COLOR_RGB2BGR))
            if box is not None:
                x0, y0, x1, y1 = box
                values.append(psnr(img[y0:y1, x0:x1], ref[y0:y1, x0:x1]))
    model.train()
    return float(np.mean(values)) if values else None


def fit(model: MINeRF, sources: list[tuple[int, Clip]], cfg: TrainConfig, run: Path, device: torch.device,
        precision: str, start_step: int = 0, optimizer_state: dict | None = None,
        freeze_conditioning: bool = False, weights: np.ndarray | None = None, label: str = "train",
        groups: list[dict] | None = None, callback: Callable[[int, float], bool] | None = None) -> dict:
    """Train ``model`` on ``sources`` [(video index, clip)] from ``start_step`` to
    ``cfg.steps``, checkpointing into ``run``. ``weights`` (len(sources),) are the sources'
    shares of the steps (default equal); ``groups`` are Adam groups with an ``lr_scale``
    each (default :func:`param_groups`). ``callback(step, train_s)`` runs every
    ``log_every`` steps (train_s: training seconds so far, validation, checkpoints and the
    callback itself excluded); when it returns True training stops there (benchmarks).
    Returns timing and loss figures."""
    run = Path(run)
    weights = np.full(len(sources), 1.0 / len(sources)) if weights is None else np.asarray(weights, float) / np.sum(weights)
    model.train()
    if groups is None:
        groups = param_groups(model, cfg, freeze_conditioning)
    optimizer = make_optimizer(groups, device)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    metrics = MetricsLog(run / "metrics.csv")
    metrics.truncate(start_step)
    boxes = [ray_boxes(model, clip) for _, clip in sources]
    mouths = [mouth_ray_boxes(clip) for _, clip in sources] if cfg.mouth_fraction > 0 else None
    wall0 = metrics.last_wall(start_step)
    smooth_start = cfg.smoothing_start()
    acc_loss = torch.zeros((), device=device)
    acc_mse = torch.zeros((), device=device)
    acc_n = 0
    best = math.inf
    last = {"loss": None, "psnr": None}
    grid = GridUpdater(model, sources, cfg, device, precision) if model.occupancy is not None else None
    budget = pack_budget(model, cfg) if grid is not None and cfg.pack else None
    runner = StepRunner(lambda batch, key: batch_loss(model, batch, cfg, device, precision, key[1]),
                        optimizer, device, graphs=cfg.cuda_graphs)  # key: (smoothing on, pack capacities)
    kept, dropped = None, 0.0
    eval_s = 0.0  # time spent on validation renders and checkpoints (not training)
    t0 = time.perf_counter()
    timed_from, timed_steps, eval_at_timed = None, 0, 0.0
    step = start_step
    with progress_bar(label, cfg.steps) as bar:
        task = bar.add_task(label, total=cfg.steps, completed=start_step, info="")
        while step < cfg.steps:
            smooth = smooth_start is not None and step >= smooth_start
            lr = learning_rate(cfg, step)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            rng = np.random.default_rng([cfg.seed, step])
            batch = draw_batch(model, sources, weights, cfg, rng, smooth, boxes, mouths)
            packing = budget is not None and step > cfg.grid_warmup
            pack = tuple(budget.capacity) if packing else None
            loss, mse, kept_counts = runner(batch, (smooth, pack))
            optimizer.step()
            if packing:
                budget.record(kept_counts)
            if grid is not None and grid.due(step):
                grid.update(step)
            acc_loss += loss
            acc_mse += mse
            acc_n += 1
            step += 1
            if timed_from is None and step - start_step == 10:  # steps/s excludes warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                timed_from, eval_at_timed = time.perf_counter(), eval_s
            elif timed_from is not None:
                timed_steps += 1
            boundary = step % cfg.log_every == 0 or step == cfg.steps or step % cfg.checkpoint_every == 0
            if not boundary:
                continue
            mean_loss = float(acc_loss) / acc_n
            mean_mse = float(acc_mse) / acc_n
            acc_loss.zero_()
            acc_mse.zero_()
            acc_n = 0
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(f"training diverged at step {step} (loss is {mean_loss}); "
                                       f"the last good checkpoint is kept in {run / 'checkpoints'}")
            if mean_loss > cfg.explode_factor * best and step > 10 * cfg.log_every:
                raise TrainingDiverged(f"loss exploded at step {step} ({mean_loss:.4g}, best {best:.4g}); "
                                       f"the last good checkpoint is kept in {run / 'checkpoints'}")
            best = min(best, mean_loss)
            shares = budget.adapt() if budget is not None else {}
            kept = shares.get("kept")
            dropped = max(dropped, shares.get("dropped", 0.0))
            train_psnr = -10.0 * math.log10(max(mean_mse, 1e-12))
            last = {"loss": mean_loss, "psnr": train_psnr}
            test_psnr = None
            t_eval = time.perf_counter()
            train_s = t_eval - t0 - eval_s  # this session's training time: evaluation so far excluded
            if step % cfg.val_every == 0 or step == cfg.steps:
                test_psnr = validation_images(model, run, step, sources, smooth)
            wall = wall0 + time.perf_counter() - t0
            metrics.write({"step": step, "wall_s": round(wall, 3), "lr": f"{lr:.4g}", "loss": f"{mean_loss:.6g}",
                           "psnr": round(train_psnr, 3), "test_psnr": None if test_psnr is None else round(test_psnr, 3),
                           "train_s": round(train_s, 3),
                           "occupied": None if grid is None else round(float(model.occupancy.fraction()), 4),
                           "kept": None if kept is None else round(kept, 4)})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                runs.save_checkpoint(run, step, model, optimizer)
            stop = callback is not None and callback(step, train_s)
            eval_s += time.perf_counter() - t_eval
            bar.update(task, completed=step, info=f"loss {mean_loss:.4f} psnr {train_psnr:.2f}"
                       + (f" val {test_psnr:.2f}" if test_psnr is not None else ""))
            if stop:
                break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        from .rendering import report_kernel_fallback

        report_kernel_fallback()  # a fused kernel that failed in training, said once
    elapsed = time.perf_counter() - t0
    steps_per_s = timed_steps / (time.perf_counter() - timed_from - (eval_s - eval_at_timed)) if timed_from and timed_steps else (
        (step - start_step) / max(elapsed, 1e-9))
    model.eval()
    return {"steps": step, "wall_s": round(wall0 + elapsed, 2), "session_s": round(elapsed, 2),
            "train_s": round(elapsed - eval_s, 2),
            "steps_per_s": round(steps_per_s, 2), "final_loss": last["loss"], "final_train_psnr": last["psnr"],
            "packed_share": None if kept is None else round(kept, 4), "pack_dropped_max": round(dropped, 6),
            "cuda_graphs": runner.captures > 0 and runner.failure is None, "graph_captures": runner.captures}


def pack_budget(model: MINeRF, cfg: TrainConfig) -> PackBudget:
    """Capacities of the packed passes, at most every sample but the background's."""
    n_fine = model.cfg.n_coarse + model.cfg.n_fine  # the fine pass runs on the union (importance_samples)
    return PackBudget((cfg.rays * (model.cfg.n_coarse - 1), cfg.rays * (n_fine - 1)))


def smoothing_active(cfg: TrainConfig, step: int) -> bool:
    start = cfg.smoothing_start()
    return start is not None and step >= start


def test_report(model: MINeRF, sources: list[tuple[int, Clip]], cfg: TrainConfig, step: int) -> list[dict]:
    """Face-crop PSNR on each clip's held-out frames (all, or the first ``test_frames``)."""
    from .output import track
    from .rendering import face_psnr

    smooth = smoothing_active(cfg, step)
    report = []
    for video, clip in track(sources, "test", total=len(sources)):
        frames = clip.test_idx if cfg.test_frames < 0 else clip.test_idx[: cfg.test_frames]
        value = face_psnr(model, video, clip, frames, smooth) if len(frames) else None
        report.append({"id": clip.name, "test_frames": int(len(frames)),
                       "test_psnr": None if value is None else round(value, 3)})
        log(f"{clip.name}: test PSNR {value if value is None else round(value, 2)} dB on {len(frames)} held-out frames")
    return report
