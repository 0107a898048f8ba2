"""The ``personalize`` stage (MI-NeRF sec. 3.4 and 4.5).

* A known identity: fine-tune the network on its store with a small learning rate (1e-5)
  for a few steps, the multiplicative (conditioning) module frozen.
* An unseen person (a clip as short as 1-3 s): a new identity code and per-frame latent
  codes are added and learned (at ``code_lr``, as new codes start from random values),
  together with the same fine-tuning of the rest; the other identities' codes are frozen. So that the other identities are not
  forgotten, a share ``replay`` of the steps draws frames of the run's other stores when
  they are still where the run found them; the summary reports their held-out PSNR before
  and after.

The result is a new run directory (``-o``) or, with ``force``, the run updated in place.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from . import runs
from .clips import load_clip
from .devices import resolve_device, resolve_precision
from .errors import MinerfError, UsageError
from .output import log, warn
from .training import TrainConfig, fit, param_groups, smoothing_active, test_report


def _prepare_output(run: Path, output: Path | None, force: bool) -> Path:
    if output is None:
        if not force:
            raise UsageError(f"{run}: give -o NEW_RUN, or --force to update the run in place")
        return run
    if runs.check_new_run_dir(output, force):
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    return output


def personalize(run: Path, name: str, store_path: Path, output: Path | None = None, steps: int = 2000,
                lr: float = 1e-5, code_lr: float = 5e-4, replay: float = 0.5, rays: int = 2048,
                test_frames: int = -1, device: str = "auto", precision: str = "auto", seed: int = 0,
                force: bool = False) -> dict:
    """Personalize a run for identity NAME from ``store_path``; returns the JSON summary."""
    run = Path(run)
    if not 0.0 <= replay < 1.0:
        raise UsageError(f"--replay {replay}: expected a fraction in [0, 1)")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    t0 = time.perf_counter()
    model, cfg, ckpt = runs.load_model(run, dev)
    base_cfg = TrainConfig.from_dict(cfg["train"])
    was_smoothed = smoothing_active(base_cfg, int(ckpt["step"]))
    clip = load_clip(store_path, dev, model.cfg.expr_dim)
    names = [d["name"] for d in cfg["identities"]]
    identities = [dict(d) for d in cfg["identities"]]
    from .train import identity_entry

    if name in names:
        video = names.index(name)
        if clip.n_frames != int(model.latent.lengths[video]):
            raise MinerfError(f"{store_path}: has {clip.n_frames} frames but identity {name!r} was trained on "
                              f"{int(model.latent.lengths[video])}; personalize a different clip as a new identity "
                              "(another --id)")
        new = False
    else:
        torch.manual_seed(seed)
        video = model.add_video(clip.n_frames)
        identities.append({**identity_entry(clip), "name": name})
        new = True
    clip.name = name
    out = _prepare_output(run, output, force)
    # others for replay: only stores still present and unchanged in length
    others = []
    if replay > 0:
        for i, d in enumerate(cfg["identities"]):
            if i == video:
                continue
            p = Path(d["store"])
            if not p.is_file():
                warn(f"replay: {d['name']}'s store {p} is missing; it is left out")
                continue
            other = load_clip(p, dev, model.cfg.expr_dim)
            if other.n_frames != d.get("frames"):
                warn(f"replay: {p} changed since training; it is left out")
                continue
            other.name = d["name"]
            others.append((i, other))
    sources = [(video, clip), *others]
    weights = np.array([1.0 - replay if others else 1.0] + [replay / max(len(others), 1)] * len(others))
    pcfg = TrainConfig(steps=steps, rays=rays, lr=lr, lr_final=lr, grid_lr_scale=base_cfg.grid_lr_scale,
                       mouth_fraction=base_cfg.mouth_fraction,  # rays drawn as the run's were
                       mask_weight=base_cfg.mask_weight, distortion_weight=base_cfg.distortion_weight,
                       smooth_after=1 if was_smoothed else 0, checkpoint_every=max(steps // 2, 1),
                       val_every=max(steps // 2, 1), log_every=max(min(50, steps // 4), 1), test_frames=test_frames,
                       precision=prec, seed=seed)
    before = test_report(model, others, TrainConfig(test_frames=5, smooth_after=pcfg.smooth_after), 1) if others else []
    # the optimizer: everything but the conditioning at lr; the identity / latent tables at code_lr
    groups = param_groups(model, pcfg, freeze_conditioning=True)
    codes = {id(model.identity.table.weight), id(model.latent.table.weight)}
    for g in groups:
        g["params"] = [p for p in g["params"] if id(p) not in codes]
    # each code table with its first row of this video (a run without latent codes has an empty table)
    rows = [(t, first) for t, first in ((model.identity.table.weight, video),
                                        (model.latent.table.weight, int(model.latent.offsets[video]))) if t.numel()]
    tables = [t for t, _ in rows]
    if new:
        # only the new person's rows learn: the other identities' codes stay as trained (a
        # zero gradient leaves a fresh Adam's update at exactly zero)
        for table, first in rows:
            mask = torch.zeros_like(table[:, :1])
            mask[first:] = 1.0
            table.register_hook(lambda grad, m=mask: grad * m)
        groups.append({"params": tables, "lr_scale": code_lr / lr})
    else:
        groups.append({"params": tables, "lr_scale": 1.0})
    if out != run:
        (out / "checkpoints").mkdir(exist_ok=True)
    elif (out / "metrics.csv").exists():
        (out / "metrics.csv").rename(out / f"metrics_before_personalize_{int(time.time())}.csv")
    for old in runs.checkpoint_paths(out):
        old.unlink()
    runs.write_config(out, model.cfg, pcfg.to_dict(), identities,
                      extra={"personalized": {"from": str(run.resolve()), "id": name, "new_identity": new,
                                              "base_steps": int(ckpt["step"]), "store": str(Path(store_path).resolve())}})
    log(f"personalizing {name} ({'new identity' if new else 'known identity'}) from {store_path}: {steps} steps, "
        f"lr {lr:g}{f', codes {code_lr:g}' if new else ''}, replay {len(others)} other identities")
    result = fit(model, sources, pcfg, out, dev, prec, groups=groups, weights=weights, label="personalize")
    target_report = test_report(model, [(video, clip)], pcfg, pcfg.steps)
    after = test_report(model, others, TrainConfig(test_frames=5, smooth_after=pcfg.smooth_after), 1) if others else []
    summary = {"command": "personalize", "run": str(out), "from": str(run), "id": name, "new_identity": new,
               "store": str(store_path), "frames": clip.n_frames, "train_frames": int(len(clip.train_idx)),
               "device": str(dev), "precision": prec, **result, "identity": target_report[0],
               "others_before": before, "others_after": after, "checkpoint": str(runs.latest_checkpoint(out)),
               "total_s": round(time.perf_counter() - t0, 2)}
    runs.write_json(out / "summary.json", summary)
    return summary
