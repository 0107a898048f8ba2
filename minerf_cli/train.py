"""The ``train`` stage: one MI-NeRF for every store given (one identity code per store)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from . import runs
from .clips import Clip, load_clip
from .devices import resolve_device, resolve_precision
from .errors import MinerfError, UsageError
from .nerf.model import FIELDS, MINeRF, ModelConfig
from .output import log, warn
from .training import TrainConfig, fit, smoothing_active, test_report

# Sample counts and sharing per field: the vanilla field is the paper's (two networks,
# 64 + 128 samples); the fast field shares one network between the passes.
FIELD_DEFAULTS = {"vanilla": {"n_coarse": 64, "n_fine": 128, "shared_field": False},
                  "fast": {"n_coarse": 64, "n_fine": 64, "shared_field": True}}

# Field constructor options new runs get (recorded in their config, so older runs keep theirs).
FIELD_OPTIONS = {"vanilla": {"density_activation": "softplus"}, "fast": {}}
DEFAULT_GRID_CUDA, DEFAULT_GRID_CPU = 64, 32  # occupancy grid cells per axis (the CPU's updates cost 8x less)


def parse_samples(spec: str) -> tuple[int, int]:
    """'64:128' -> (64, 128) coarse and fine samples per ray."""
    try:
        coarse, fine = (int(x) for x in spec.split(":"))
    except ValueError:
        raise UsageError(f"--samples {spec!r}: expected COARSE:FINE, e.g. 64:128") from None
    if coarse < 2 or fine < 1:
        raise UsageError(f"--samples {spec!r}: need at least 2 coarse and 1 fine sample")
    return coarse, fine


def parse_field_options(field: str, items: list[str]) -> dict:
    """['width=128', ...] -> {'width': 128, ...}, checked against the field's constructor."""
    import inspect

    from .nerf.model import ModelConfig, make_field

    cls = type(make_field(ModelConfig(field=field, frames_per_video=[1]), 1)) if items else None
    allowed = {} if cls is None else {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                                      if k not in ("self", "cond_dim", "latent_dim", "box_min", "box_max")}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed:
            raise UsageError(f"--field-option {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(allowed))}")
        default = allowed[key]
        try:
            if isinstance(default, tuple):
                out[key] = tuple(int(v) for v in value.split(",") if v)
            else:
                out[key] = type(default)(value) if default is not None else int(value)
        except ValueError:
            raise UsageError(f"--field-option {item!r}: {value!r} is not a valid {type(default).__name__}") from None
    return out


def expand_stores(inputs: list[Path]) -> list[Path]:
    """Store files from arguments that are .h5 files or directories of them (sorted)."""
    stores: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".h5", ".hdf5") and q.is_file())
            if not found:
                raise UsageError(f"{p}: directory has no .h5 stores")
            stores.extend(found)
        elif p.is_file():
            stores.append(p)
        else:
            raise UsageError(f"{p}: no such store or directory")
    names = [s.stem for s in stores]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"two stores share the identity name {dupes[0]!r} (names are file stems)")
    return stores


def identity_entry(clip: Clip) -> dict:
    return {"name": clip.name, "store": str(clip.path.resolve()), "sha256": clip.sha256, "frames": clip.n_frames,
            "train_frames": int(len(clip.train_idx)), "test_frames": int(len(clip.test_idx)), "fps": clip.fps,
            "size": list(clip.size)}


PRELOAD_BUDGET = 4 * 2**30  # decoded frames + head masks of all clips kept whole up to this size (host memory)
PRELOAD_GPU_SHARE = 0.25  # on a GPU: up to this share of its memory, if more than PRELOAD_BUDGET
STREAM_CACHE_FRAMES = 64  # decoded frames kept per clip when streaming


def preload_budget(device: torch.device | None = None) -> int:
    """Bytes of decoded frames and masks kept whole: PRELOAD_BUDGET, or on a GPU (where they
    live) a quarter of its memory when that is more (an H100: 20 GB, 16 identities x 12 s
    take 5 GB; streaming them cost a quarter of the training speed, decoding on the host)."""
    budget = PRELOAD_BUDGET
    if device is not None and torch.device(device).type == "cuda":
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        budget = max(budget, int(PRELOAD_GPU_SHARE * total))
    return budget


def cache_policy(stores: list[Path], cache_frames: int | None, device: torch.device | None = None) -> int | None:
    """Frames kept in memory per clip: ``cache_frames`` if given (0 or less: all), else all
    when the clips' decoded frames and masks fit in :func:`preload_budget`, else STREAM_CACHE_FRAMES."""
    if cache_frames is not None:
        return None if cache_frames <= 0 else cache_frames
    from . import store

    total = 0
    for path in stores:
        with store.open_store(path) as f:
            r = store.FrameReader(f)
            total += len(r) * r.height * r.width * 4
    return None if total <= preload_budget(device) else STREAM_CACHE_FRAMES


def load_sources(stores: list[Path], device: torch.device, expr_dim: int | None = None,
                 cache_frames: int | None = None) -> list[Clip]:
    from .output import track

    keep = cache_policy(stores, cache_frames, device)
    if keep is not None:
        log(f"streaming frames: at most {keep} decoded frames per clip in memory")
    return [load_clip(s, device, expr_dim, cache_frames=keep) for s in track(stores, "load", total=len(stores))]


def finish_run(run: Path, model: MINeRF, cfg: TrainConfig, sources, result: dict, extra: dict) -> dict:
    """Test PSNR per identity, plots, RUN/summary.json; returns the summary."""
    report = test_report(model, sources, cfg, result["steps"])
    values = [r["test_psnr"] for r in report if r["test_psnr"] is not None]
    plots = {}
    try:
        from . import plots as plotting

        plotting.training_curve(run / "metrics.csv", run / "training_curve.png", force=True)
        plots["training_curve"] = str(run / "training_curve.png")
        names = [d["name"] for d in runs.read_config(run)["identities"]]
        if len(names) >= 2:
            plotting.identity_codes(names, model.identity.table.weight.detach().float().cpu().numpy(), run / "identity_codes.png", force=True)
            plots["identity_codes"] = str(run / "identity_codes.png")
    except MinerfError as exc:
        warn(f"plots skipped: {exc}")
    summary = {**extra, "run": str(run), **result, "smoothing": smoothing_active(cfg, result["steps"]),
               "identities": report, "mean_test_psnr": round(sum(values) / len(values), 3) if values else None,
               "checkpoint": str(runs.latest_checkpoint(run)), **plots}
    runs.write_json(run / "summary.json", summary)
    return summary


def train(stores: list[Path], run: Path, model_cfg: ModelConfig, cfg: TrainConfig, device: str = "auto",
          resume: bool = False, force: bool = False, resume_steps: int | None = None,
          cache_frames: int | None = None) -> dict:
    """Train (or resume) a run; returns the JSON summary.

    On resume the run's saved configuration is used (``model_cfg`` and ``cfg`` are
    ignored) and training continues from the latest checkpoint with the same schedule;
    ``resume_steps`` extends the run to that many steps. ``cache_frames``: decoded frames
    kept per clip (None: all when they fit in :func:`preload_budget`, else streamed; <= 0: all)."""
    run = Path(run)
    dev = resolve_device(device)
    precision = resolve_precision(cfg.precision, dev)
    if model_cfg.field not in FIELDS:
        raise UsageError(f"--field {model_cfg.field!r}: expected one of {', '.join(FIELDS)}")
    t0 = time.perf_counter()
    start_step, opt_state = 0, None
    if resume:
        saved = runs.read_config(run)
        if "personalized" in saved:
            raise UsageError(f"{run}: written by `minerf personalize`, which cannot be resumed; "
                             "run personalize again (more --steps) from the original run")
        model, _, ckpt = runs.load_model(run, dev)
        model.train()
        cfg = TrainConfig.from_dict(saved["train"])
        if resume_steps is not None:
            cfg.steps = resume_steps
        precision = resolve_precision(cfg.precision, dev)
        stores = [Path(d["store"]) for d in saved["identities"]]
        clips = load_sources(stores, dev, model.cfg.expr_dim, cache_frames)
        for d, clip in zip(saved["identities"], clips):
            if d.get("frames") != clip.n_frames:
                raise MinerfError(f"{clip.path}: has {clip.n_frames} frames, the run was trained on {d.get('frames')}")
        start_step, opt_state = int(ckpt["step"]), ckpt["optimizer"]
        if "rng_cpu" in ckpt:
            torch.set_rng_state(ckpt["rng_cpu"].cpu())
        if dev.type == "cuda" and "rng_cuda" in ckpt:
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng_cuda"]])
        if start_step >= cfg.steps:
            raise UsageError(f"{run}: already trained for {start_step} steps (give a larger --steps to continue)")
        runs.write_config(run, model.cfg, cfg.to_dict(), saved["identities"])
        log(f"resuming {run} at step {start_step} of {cfg.steps}")
    else:
        replace = runs.check_new_run_dir(run, force, "use --resume to continue it or --force to replace it")
        stores = expand_stores(stores)
        clips = load_sources(stores, dev, cache_frames=cache_frames)
        if replace:  # only once the new inputs are known to be good
            shutil.rmtree(run)
        dims = {c.expression.shape[1] for c in clips}
        if len(dims) != 1:
            raise MinerfError(f"the stores' expression dimensions differ ({sorted(dims)}); refit them with one minerf version")
        model_cfg.expr_dim = dims.pop()
        model_cfg.frames_per_video = [c.n_frames for c in clips]
        if model_cfg.occupancy_resolution < 0:
            model_cfg.occupancy_resolution = DEFAULT_GRID_CUDA if dev.type == "cuda" else DEFAULT_GRID_CPU
        torch.manual_seed(cfg.seed)
        model = MINeRF(model_cfg).to(dev)
        run.mkdir(parents=True, exist_ok=True)
        runs.write_config(run, model.cfg, cfg.to_dict(), [identity_entry(c) for c in clips])
    log(f"training {len(clips)} identit{'y' if len(clips) == 1 else 'ies'} on {dev} ({precision}), "
        f"field {model.cfg.field}, module {model.cfg.module}, {cfg.steps} steps")
    sources = list(enumerate(clips))
    result = fit(model, sources, cfg, run, dev, precision, start_step=start_step, optimizer_state=opt_state)
    if dev.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    extra = {"command": "train", "device": str(dev), "precision": precision, "field": model.cfg.field,
             "module": model.cfg.module, "rays_per_step": cfg.rays, "resumed_from": start_step if resume else None}
    summary = finish_run(run, model, cfg, sources, result, extra)
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    return summary
