"""Training the audio models from tracked stores with audio (`minerf encode-audio --fit`).

:func:`fit_audio_model` reads every store's /audio/pcm, /landmarks and /tracking/expression,
holds out the last ``test_fraction`` (10%) of the frames of every clip from all three models,
and trains, on the rest, with mini-batches (Adam, cosine-decayed learning rate):

(a) JEAN's landmark autoencoder: pairs of frames of the same clip, mouth embeddings swapped
    with p = 0.8, L1 (eq. 1);
(b) the audio encoder: InfoNCE (tau 0.1) between each frame's audio window and the frozen
    mouth embedding of the same frame; a batch holds several clips with many frames each, and
    the negatives of an anchor are the frames of the same identity (by default: the same clip)
    more than ``min_gap`` frames away (:func:`.losses.negatives_mask`); log-mel gain jitter;
(c) the audio-to-expression model: MSE between its outputs and the tracked mouth/jaw
    blendshapes (facemodel.MOUTH_SET) of the frame minus the clip's training-part mean
    (``target="residual"``; the means are stored in the bundle, keyed by store stem, and
    added back by predict_expressions) or, with ``target="absolute"``, sigmoid outputs vs the
    raw weights.

Regularisation for small real sets (all defaults): windows of 0.32 s, each mel band
standardised over its clip (``mel_norm="clip"``), SpecAugment-style band / time masks and
noise (``augment``), AdamW weight decay 0.05; InfoNCE batches of 2 clips x 128 frames (many
same-clip negatives) against per-clip centred mouth embeddings (``centre_mouth``), and sync
on per-clip centred embeddings (``sync_centre``).

The summary reports, on held-out frames only: per-blendshape Pearson correlation of the
(smoothed) predicted and tracked weights (jawOpen first, pooled over clips, and per clip),
InfoNCE top-1 accuracy (the positive audio window against every same-clip held-out window more
than min_gap frames away) with its chance level, and the sync offset / confidence found on each
clip's held-out part.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MinerfError, UsageError
from ..output import log, progress_bar
from .autoencoder import autoencoder_loss, sample_pairs, swap_mouth
from .bundle import AudioBundle, default_config
from .losses import info_nce, negatives_mask, sync_scores


SYNC_SHIFT = 10  # frames: held-out sync with the audio shifted this much (clips with >= 45 held-out frames)
SHIFT_MIN_FRAMES = 45


@dataclass
class Clip:
    name: str
    path: str
    identity: int
    fps: float
    windows: np.ndarray  # (N, T, 80)
    landmarks: np.ndarray  # (N, 478, 3)
    expression: np.ndarray  # (N, M) tracked mouth blendshapes (NaN where not tracked)
    n_train: int

    @property
    def n(self) -> int:
        return len(self.windows)


def mouth_set_indices() -> tuple[list[str], list[int]]:
    from ..facemodel import MOUTH_SET, load_face_model

    names = load_face_model().expression_names
    return list(MOUTH_SET), [names.index(n) for n in MOUTH_SET]


def read_clip(path: Path, bundle: AudioBundle, identity: int, test_fraction: float) -> Clip:
    """One store -> a Clip (MinerfError / FormatError with the store's name if it lacks something)."""
    from .. import store
    from ..audio import SAMPLE_RATE, resample

    path = Path(path)
    with store.open_store(path, require=("frames", "landmarks")) as f:
        if "audio" not in f:
            raise MinerfError(f"{path}: the store has no /audio (the clip had no audio track); "
                              "--fit needs stores with audio")
        if "tracking" not in f:
            raise MinerfError(f"{path}: the store has no /tracking (run `minerf fit3dmm {path}` first); "
                              "--fit needs tracked stores")
        fps = float(f["frames"].attrs["fps"])
        n = int(f["frames"].shape[0])
        rate = int(f["audio"].attrs["sample_rate"])
        pcm = f["audio/pcm"][()].astype(np.float32)
        lm = f["landmarks/points"][()].astype(np.float32)
        valid = f["landmarks/valid"][()].astype(bool)
        ex = f["tracking/expression"][()].astype(np.float32)
        names = store.expression_names(f)
        err = f["tracking/fit_error"][()]
    if rate != SAMPLE_RATE:
        pcm = resample(pcm, rate, SAMPLE_RATE)
    if n < 10:
        raise MinerfError(f"{path}: only {n} frames; --fit needs clips of at least 10 frames")
    lm[~valid] = np.nan
    try:
        cols = [names.index(m) for m in bundle.mouth_names]
    except ValueError as exc:
        raise MinerfError(f"{path}: /tracking lacks a mouth blendshape ({exc})") from None
    expr = ex[:, cols]
    expr[~np.isfinite(err) | ~valid] = np.nan
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    return Clip(name=path.stem, path=str(path), identity=identity, fps=fps, windows=bundle.windows(pcm, fps, n),
                landmarks=lm, expression=expr, n_train=n - n_test)


def _lr(step: int, steps: int, lr: float) -> float:
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))


def _loss_summary(losses: list[float]) -> dict:
    k = max(1, len(losses) // 10)
    return {"first": float(np.mean(losses[:k])), "last": float(np.mean(losses[-k:])), "steps": len(losses)}


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-8 or np.std(b[ok]) < 1e-8:
        return None
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _spec_augment(w: torch.Tensor, gen: np.random.Generator, bands: int = 12, steps: int = 10) -> torch.Tensor:
    """SpecAugment-style masks for (B, T, 80) windows (normalised log-mel): one random band block
    (up to ``bands`` wide) and one random time block (up to ``steps``) set to the window mean,
    plus small Gaussian noise; a regulariser for the small real training sets."""
    b, t, k = w.shape
    w = w.clone()
    fill = w.mean((1, 2), keepdim=True)
    fw = gen.integers(0, bands + 1, b)
    f0 = gen.integers(0, k, b)
    tw = gen.integers(0, steps + 1, b)
    t0 = gen.integers(0, t, b)
    fmask = torch.zeros(b, 1, k, dtype=torch.bool)
    tmask = torch.zeros(b, t, 1, dtype=torch.bool)
    for i in range(b):
        fmask[i, 0, f0[i]:f0[i] + fw[i]] = True
        tmask[i, t0[i]:t0[i] + tw[i], 0] = True
    w = torch.where(fmask.to(w.device) | tmask.to(w.device), fill, w)
    return w + 0.1 * torch.randn_like(w)


def _train_loop(name: str, steps: int, params, lr: float, step_fn, weight_decay: float = 0.0) -> list[float]:
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if weight_decay else torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    with progress_bar(name, steps) as bar:
        task = bar.add_task(name, total=steps, info="")
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = _lr(step, steps, lr)
            loss = step_fn(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if step % 25 == 0 or step == steps - 1:
                bar.update(task, info=f"loss {np.mean(losses[-25:]):.4f}")
            bar.advance(task)
    return losses


def fit_audio_model(stores: list[Path], out: Path, steps: int = 1500, device: str = "cpu", seed: int = 0,
                    test_fraction: float = 0.1, force: bool = False, batch: int = 256,
                    expression_model: str = "conv", lr: float = 1e-3, temperature: float = 0.1,
                    min_gap: int = 3, identities: list[str] | None = None,
                    window_seconds: float = 0.32, clips_per_batch: int = 2, mel_norm: str | None = "clip",
                    target: str = "residual", sync_centre: bool = True, centre_mouth: bool = True,
                    expression_steps: int | None = None, augment: bool = True, weight_decay: float = 0.05,
                    chunk_frames: int = 0, smooth_sigma: float | None = None,
                    energy_beta: float | None = None) -> dict:
    """Train the three audio models on ``stores`` and save an :class:`AudioBundle` to ``out``.

    ``steps``: optimiser steps of EACH of the three models. ``identities``: an identity name per
    store (frames of stores with the same name are InfoNCE negatives of each other); default:
    each store is its own identity. ``smooth_sigma`` / ``energy_beta``: the output smoothing
    (frames) and the weight of the speech-energy envelope added to jawOpen at prediction time
    (defaults: bundle.DEFAULT_SMOOTH_SIGMA = 1, energy.DEFAULT_BETA = 0.25; 0 disables either).
    Returns the summary (also in DIR/config.json "training")."""
    t0 = time.perf_counter()
    stores = [Path(s) for s in stores]
    out = Path(out)
    if not stores:
        raise UsageError("--fit needs at least one store")
    if steps < 1:
        raise UsageError(f"--steps must be >= 1 (got {steps})")
    if not 0.0 <= test_fraction < 0.9:
        raise UsageError(f"test_fraction must be in [0, 0.9) (got {test_fraction})")
    if expression_model not in ("conv", "head"):
        raise UsageError(f"expression model must be 'conv' or 'head' (got {expression_model!r})")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise UsageError(f"{out}: exists and is not an empty directory (use --force to replace the audio model)")
    if identities is not None and len(identities) != len(stores):
        raise UsageError("identities must name one identity per store")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)

    names, indices = mouth_set_indices()
    if target not in ("residual", "absolute"):
        raise UsageError(f"target must be 'residual' or 'absolute' (got {target!r})")
    extra = {k: v for k, v in (("smooth_sigma", smooth_sigma), ("energy_beta", energy_beta)) if v is not None}
    bundle = AudioBundle(default_config(names, indices, window_seconds, expression_model, mel_norm=mel_norm,
                                        target=target, sync_centre=sync_centre, **extra), "cpu")
    id_names = identities or [str(s) for s in stores]
    id_of = {name: i for i, name in enumerate(dict.fromkeys(id_names))}
    clips = []
    for s, idn in zip(stores, id_names):
        clips.append(read_clip(s, bundle, id_of[idn], test_fraction))
    log(f"audio model: {len(clips)} clips, {sum(c.n for c in clips)} frames "
        f"({sum(c.n_train for c in clips)} for training)")
    t_read = time.perf_counter()

    # ---- flat training arrays
    lm_vec = [bundle.landmark_vectors(c.landmarks) for c in clips]
    clip_idx = np.concatenate([np.full(c.n, i) for i, c in enumerate(clips)])
    frame_idx = np.concatenate([np.arange(c.n) for c in clips])
    is_train = np.concatenate([np.arange(c.n) < c.n_train for c in clips])
    vec_all = np.concatenate(lm_vec)
    lm_ok = np.isfinite(vec_all).all(1)
    tr_lm = is_train & lm_ok
    if tr_lm.sum() < 2:
        raise MinerfError("fewer than 2 training frames with face landmarks")
    mean = vec_all[tr_lm].mean(0)
    std = np.maximum(vec_all[tr_lm].std(0), 1e-3)
    bundle.landmark_mean = torch.from_numpy(mean)
    bundle.landmark_std = torch.from_numpy(std)
    vec_all = (vec_all - mean) / std  # standardised (landmark_vectors used identity stats above)
    win_all = torch.from_numpy(np.concatenate([c.windows for c in clips]))  # (F, T, 80)
    expr_all = np.concatenate([c.expression for c in clips])
    bundle.to(dev)

    # ---- (a) landmark autoencoder
    ae = bundle.autoencoder.train()
    tr_ids = np.flatnonzero(tr_lm)
    x_tr = torch.from_numpy(vec_all[tr_ids].astype(np.float32)).to(dev)
    vid_tr = torch.from_numpy(clip_idx[tr_ids])

    def ae_step(step):
        ia, ib = sample_pairs(vid_tr, batch, generator=gen)
        a, b = x_tr[ia], x_tr[ib]
        sw = swap_mouth(a, b, p=0.8, video_a=vid_tr[ia].to(dev), video_b=vid_tr[ib].to(dev), generator=gen, dims=2)
        return autoencoder_loss(ae, a, b, sw)

    ae_losses = _train_loop("autoencoder", steps, ae.parameters(), lr, ae_step)
    ae.eval()
    with torch.no_grad():
        mouth_all = np.full((len(vec_all), ae.emb_dim), np.nan, np.float32)
        ok_ids = np.flatnonzero(lm_ok)
        mouth_all[ok_ids] = ae.encode_mouth(torch.from_numpy(vec_all[ok_ids].astype(np.float32)).to(dev)).cpu().numpy()
    # held-out reconstruction error (no swap), for the record
    te_lm = ~is_train & lm_ok
    with torch.no_grad():
        xt = torch.from_numpy(vec_all[te_lm].astype(np.float32)).to(dev)
        ae_test = float((ae(xt) - xt).abs().mean()) if len(xt) else None

    # ---- (b) audio encoder, InfoNCE against the frozen mouth embeddings
    enc = bundle.audio_encoder
    flat_tr = win_all[torch.from_numpy(is_train)]
    enc.set_normalisation(flat_tr.mean((0, 1)), flat_tr.std((0, 1)))
    del flat_tr
    enc.to(dev).train()
    if centre_mouth:  # InfoNCE on the speech dynamics: each clip's training-part mean mouth removed
        mouth_all = mouth_all.copy()
        for i in range(len(clips)):
            sel = (clip_idx == i) & is_train & lm_ok
            if sel.any():
                mouth_all[clip_idx == i] -= mouth_all[sel].mean(0)
    mouth_t = torch.from_numpy(mouth_all)
    per_clip_train = [np.flatnonzero((clip_idx == i) & is_train & lm_ok) for i in range(len(clips))]
    usable = [i for i, ids in enumerate(per_clip_train) if len(ids) >= 2]
    if not usable:
        raise MinerfError("no clip has 2 or more training frames with landmarks")
    k_clips = min(clips_per_batch, len(usable))
    per = max(2, batch // k_clips)

    def contrastive_batch():
        chosen = rng.choice(usable, size=k_clips, replace=False)
        if not chunk_frames:
            return np.concatenate([rng.choice(per_clip_train[i], size=min(per, len(per_clip_train[i])),
                                              replace=False) for i in chosen])
        # runs of chunk_frames consecutive frames: every anchor has hard negatives from the
        # nearby times of its own clip (min_gap + 1 .. chunk_frames frames away): temporal precision
        out = []
        for i in chosen:
            ids = per_clip_train[i]
            runs = max(1, per // chunk_frames)
            if len(ids) <= chunk_frames * runs:
                out.append(ids)
                continue
            starts = np.sort(rng.choice(len(ids) - chunk_frames + 1, size=runs, replace=False))
            sel = np.unique(np.concatenate([np.arange(a, a + chunk_frames) for a in starts]))
            out.append(ids[sel])
        return np.concatenate(out)

    def nce_step(step):
        ids = contrastive_batch()
        w = win_all[ids].to(dev)
        w = w + torch.empty(len(ids), 1, 1, device=dev).uniform_(-1.0, 1.0, generator=None)  # gain jitter
        if augment:
            w = _spec_augment(w, rng)
        a = enc(w)
        m = mouth_t[ids].to(dev)
        ident = torch.as_tensor([clips[c].identity for c in clip_idx[ids]])
        mask = negatives_mask(ident, torch.as_tensor(clip_idx[ids]), torch.as_tensor(frame_idx[ids]), min_gap=min_gap)
        return info_nce(a, m, temperature, mask.to(dev))

    nce_losses = _train_loop("audio encoder", steps, enc.parameters(), lr, nce_step, weight_decay=weight_decay)
    enc.eval()

    # ---- (c) audio -> mouth/jaw blendshapes
    expr_ok = np.isfinite(expr_all).all(1)
    tr_ex = np.flatnonzero(is_train & expr_ok)
    if len(tr_ex) < 2:
        raise MinerfError("fewer than 2 tracked training frames")
    # per-clip (training part) mean pose; a residual model learns the deviation from it
    clip_means = {}
    for i, c in enumerate(clips):
        sel = (clip_idx == i) & is_train & expr_ok
        if sel.any():
            clip_means[i] = expr_all[sel].mean(0)
    global_mean = expr_all[tr_ex].mean(0)
    id_means: dict[str, list[float]] = {}
    for i, c in enumerate(clips):
        if i in clip_means:
            id_means[c.name] = clip_means[i].tolist()
    if identities is not None:
        for idn in dict.fromkeys(id_names):
            sel = np.isin(clip_idx, [i for i, n in enumerate(id_names) if n == idn]) & is_train & expr_ok
            if sel.any():
                id_means[idn] = expr_all[sel].mean(0).tolist()
    bundle.config["expression_means"] = {"global": global_mean.tolist(), "identities": id_means,
                                         "keys": "store stems (and identity names given to the fit)"}
    target_all = expr_all.copy()
    if target == "residual":
        for i, mu in clip_means.items():
            target_all[clip_idx == i] -= mu
    y_all = torch.from_numpy(np.nan_to_num(target_all).astype(np.float32))
    exm = bundle.expression
    if expression_model == "conv":
        flat = win_all[torch.from_numpy(tr_ex)]
        exm.set_normalisation(flat.mean((0, 1)), flat.std((0, 1)))
        del flat
    # start from the mean training pose: last layer small, its bias the logit of the mean target
    last = [m for m in exm.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        if target == "residual":
            last.bias.zero_()
        else:
            mean_y = np.clip(expr_all[tr_ex].mean(0), 0.02, 0.98)
            last.bias.copy_(torch.from_numpy(np.log(mean_y / (1 - mean_y)).astype(np.float32)))
        last.weight.mul_(0.1)
    exm.to(dev).train()

    def ex_step(step):
        ids = tr_ex[rng.integers(0, len(tr_ex), batch)]
        w = win_all[ids].to(dev)
        if expression_model == "conv":
            w = w + torch.empty(len(ids), 1, 1, device=dev).uniform_(-1.0, 1.0)
        if augment:
            w = _spec_augment(w, rng)
        out = bundle.expression_logits(w)
        pred = out if target == "residual" else torch.sigmoid(out)
        return F.mse_loss(pred, y_all[ids].to(dev))

    ex_losses = _train_loop("audio to expression", expression_steps or steps, exm.parameters(), lr, ex_step,
                            weight_decay=weight_decay)
    bundle.eval()
    t_train = time.perf_counter()

    # ---- held-out evaluation
    evaluation = evaluate_heldout(bundle, clips, min_gap=min_gap, temperature=temperature)
    summary = {
        "output": str(out),
        "stores": [str(s) for s in stores],
        "clips": len(clips),
        "frames": int(sum(c.n for c in clips)),
        "train_frames": int(sum(c.n_train for c in clips)),
        "test_frames": int(sum(c.n - c.n_train for c in clips)),
        "test_fraction": test_fraction,
        "identities": len(id_of),
        "steps": steps, "batch": batch, "lr": lr, "seed": seed, "device": str(dev),
        "expression_model": expression_model, "target": target, "mel_norm": mel_norm,
        "sync_centre": sync_centre, "centre_mouth": centre_mouth, "clips_per_batch": clips_per_batch,
        "temperature": temperature, "min_gap": min_gap,
        "mouth_names": names,
        "losses": {"autoencoder": _loss_summary(ae_losses), "infonce": _loss_summary(nce_losses),
                   "expression_mse": _loss_summary(ex_losses)},
        "autoencoder_test_l1": ae_test,
        **evaluation,
        "seconds": {"read": round(t_read - t0, 2), "train": round(t_train - t_read, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    bundle.config["training"] = summary
    bundle.to("cpu").save(out, force=force)
    return summary


def evaluate_heldout(bundle: AudioBundle, clips: list[Clip], min_gap: int = 3, temperature: float = 0.1) -> dict:
    """Held-out (frames n_train..N-1 of every clip) correlation, InfoNCE accuracy and sync."""
    names = bundle.mouth_names
    preds, tracked, per_clip = [], [], []
    hits, chance, n_anchor, nce = 0, [], 0, []
    syncs, shifted = [], []
    for c in clips:
        if c.n_train >= c.n:
            continue
        w = c.windows[c.n_train:]
        p = bundle.predict_expressions(w, smooth=True, identity=c.name if c.name in bundle.identity_names else None)
        y = c.expression[c.n_train:]
        preds.append(p)
        tracked.append(y)
        jaw = names.index("jawOpen")
        a = bundle.audio_embedding(w)
        m = bundle.mouth_embedding(c.landmarks[c.n_train:])
        ok = np.isfinite(m).all(1)
        entry = {"clip": c.name, "test_frames": int(c.n - c.n_train), "jawOpen_r": _pearson(p[:, jaw], y[:, jaw])}
        if ok.sum() >= 2:
            at, mt = torch.from_numpy(a[ok]), torch.from_numpy(m[ok])
            fr = torch.from_numpy(np.flatnonzero(ok))
            neg = negatives_mask(torch.zeros(len(fr), dtype=torch.long), torch.zeros(len(fr), dtype=torch.long), fr,
                                 min_gap=min_gap)
            logits = F.normalize(mt, dim=-1) @ F.normalize(at, dim=-1).T
            has = neg.any(1)
            if bool(has.any()):
                pos = logits.diagonal()
                beat = torch.where(neg, logits, torch.full_like(logits, -2.0)).max(1).values < pos
                hits += int(beat[has].sum())
                n_anchor += int(has.sum())
                chance += (1.0 / (neg[has].sum(1).float() + 1)).tolist()
                nce.append(float(info_nce(at, mt, temperature, neg)))
            az, mz = bundle.sync_embeddings(a, m)
            k = min(15, max(1, (c.n - c.n_train) // 3))
            r = sync_scores(torch.from_numpy(az), torch.from_numpy(mz), max_offset=k)
            entry["sync_offset"] = r.best_offset
            entry["sync_confidence"] = round(r.confidence, 4)
            syncs.append(r.best_offset)
            n_test = c.n - c.n_train
            if n_test >= SHIFT_MIN_FRAMES:
                # the audio SYNC_SHIFT frames early (audio frame t = video frame t + shift): expect +shift
                az, mz = bundle.sync_embeddings(a[SYNC_SHIFT:], m[:n_test - SYNC_SHIFT])
                r = sync_scores(torch.from_numpy(az), torch.from_numpy(mz), max_offset=15)
                entry["sync_offset_shift10"] = r.best_offset
                shifted.append(r.best_offset)
        per_clip.append(entry)
    if not preds:
        return {"heldout": None}
    P, Y = np.concatenate(preds), np.concatenate(tracked)
    corr = {n: _pearson(P[:, i], Y[:, i]) for i, n in enumerate(names)}
    corr = {"jawOpen": corr.pop("jawOpen"), **corr}
    return {"heldout": {
        "correlation": corr,
        "mse": float(np.nanmean((P - Y) ** 2)),
        "infonce_accuracy": hits / n_anchor if n_anchor else None,
        "infonce_chance": float(np.mean(chance)) if chance else None,
        "infonce_loss": float(np.mean(nce)) if nce else None,
        "sync_offsets": syncs,
        "sync_abs_offset_median": float(np.median(np.abs(syncs))) if syncs else None,
        "sync_offsets_shift10": shifted,
        "sync_shift10_recovered": (sum(abs(o - SYNC_SHIFT) <= 1 for o in shifted), len(shifted)),
        "sync_aligned_within1": sum(abs(o) <= 1 for o in syncs),
        "per_clip": per_clip,
    }}
