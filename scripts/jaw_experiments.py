#!/usr/bin/env python
"""Fast jawOpen experiments for the audio-to-expression model (docs/audio.md, "within-clip jawOpen").

Trains ONLY the audio-to-expression model (the conv model of ``fit_audio_model``, residual
target, the same augmentation / weight decay / schedule) on cached real-clip data, and reports
the two figures of the acceptance item:

* split "tails": fit on the first 90% of all 14 real clips; held-out last 10% of each clip:
  pooled jawOpen r (per-store training mean added) and the per-clip median r;
* split "whole": fit on the first 90% of the 12 other clips; r over each whole unseen clip
  (Obama clip 2, andrew clip 2).

    python scripts/jaw_experiments.py --name base                     # defaults
    python scripts/jaw_experiments.py --name speed --speeds 0.9,1.0,1.1
    python scripts/jaw_experiments.py --name phones --features mel+phones          # pocketsphinx allphone
    python scripts/jaw_experiments.py --make-phones /tmp/jawexp/phones.pkl    # pocketsphinx word ASR + allphone ids
    python scripts/jaw_experiments.py --name asr --features mel+asrph --phones /tmp/jawexp/phones.pkl
    python scripts/jaw_experiments.py --name aux --aux 8 --lm /tmp/jawexp/lm.pkl    # after --make-lm /tmp/jawexp/lm.pkl

Data (audio, jawOpen and the mouth set, pocketsphinx phone segments) is cached in --cache.
One JSON line per run is appended to --log.
"""

from __future__ import annotations

import argparse
import glob
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

PHONE_CACHE: dict = {}
SMOOTH = [1.0]
CURRENT = [""]
BETAS = (0.0, 0.25, 0.5, 1.0)


def z(x):
    x = np.asarray(x, np.float64)
    return (x - x.mean()) / max(x.std(), 1e-8)


HOLD = ("styletalk_Obama_clip2_av", "styletalk_andrew_clip_2_av")


def load_cache(stores: list[Path], cache: Path) -> list[dict]:
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    import h5py

    from minerf_cli import store
    from minerf_cli.audio import SAMPLE_RATE, resample
    from minerf_cli.audio_model.train import mouth_set_indices

    names, _ = mouth_set_indices()
    out = []
    for s in stores:
        with h5py.File(s) as f:
            fps = float(f["frames"].attrs["fps"])
            n = int(f["frames"].shape[0])
            rate = int(f["audio"].attrs["sample_rate"])
            pcm = f["audio/pcm"][()].astype(np.float32)
            valid = f["landmarks/valid"][()].astype(bool)
            ex = f["tracking/expression"][()].astype(np.float32)
            err = f["tracking/fit_error"][()]
            en = store.expression_names(f)
        if rate != SAMPLE_RATE:
            pcm = resample(pcm, rate, SAMPLE_RATE)
        expr = ex[:, [en.index(m) for m in names]]
        expr[~np.isfinite(err) | ~valid] = np.nan
        out.append({"name": s.stem, "fps": fps, "n": n, "pcm": pcm, "expr": expr})
    cache.write_bytes(pickle.dumps(out))
    return out


def clip_features(bundle, pcm: np.ndarray, fps: float, n: int, features: str) -> np.ndarray:
    from jaw_features import phone_windows

    parts = []
    if "mel20" in features:  # 80 bands pooled in groups of 4 (less speaker timbre detail)
        w = bundle.windows(pcm, fps, n)
        parts.append(w.reshape(w.shape[0], w.shape[1], 20, 4).mean(3))
    elif "mel" in features:
        parts.append(bundle.windows(pcm, fps, n))
    if "phones" in features or "openness" in features:
        kind = "openness" if "openness" in features else "onehot"
        parts.append(phone_windows(pcm, fps, n, bundle.window_steps, kind=kind))
    for key in ("asrph", "allph"):  # precomputed phone ids per mel frame (--phones cache), one-hot windows
        if key in features and PHONE_CACHE:
            from jaw_features import PHONES
            from minerf_cli.audio_windows import frame_windows
            from minerf_cli.mel import HOP_S

            ids = PHONE_CACHE[CURRENT[0]]["asr" if key == "asrph" else "allphone"].astype(np.int64)
            rows = np.zeros((len(ids), len(PHONES)), np.float32)
            rows[np.arange(len(ids)), ids] = 1.0
            half = (bundle.window_steps - 1) // 2
            parts.append(frame_windows(rows, fps, 0, n, window_frames=2 * half * HOP_S * fps, hop_s=HOP_S,
                                       pad_value=0.0))
    if "formants" in features:
        parts.append(formant_windows(pcm, fps, n, bundle.window_steps))
    return np.concatenate(parts, axis=2).astype(np.float32)


def formant_rows(pcm: np.ndarray) -> np.ndarray:
    """(mel frames, 5): z-scored log F1, log F2, log F3 (voiced frames; else 0), voicing, intensity z."""
    import parselmouth

    from minerf_cli.mel import HOP_S, num_frames

    m = num_frames(len(pcm))
    snd = parselmouth.Sound(pcm.astype(np.float64), sampling_frequency=16000)
    fm = snd.to_formant_burg(time_step=0.01, max_number_of_formants=5, maximum_formant=5500, window_length=0.025)
    inten = snd.to_intensity(time_step=0.01)
    pitch = snd.to_pitch(time_step=0.01)
    tt = np.arange(m) * HOP_S
    voiced = np.isfinite(np.array([pitch.get_value_at_time(x) for x in tt]))
    out = np.zeros((m, 5), np.float32)
    for k in (1, 2, 3):
        f = np.log(np.array([fm.get_value_at_time(k, x) for x in tt]))
        ok = voiced & np.isfinite(f)
        if ok.sum() > 2:
            out[ok, k - 1] = (f[ok] - f[ok].mean()) / max(f[ok].std(), 1e-3)
    out[:, 3] = voiced
    i = np.array([inten.get_value(x) for x in tt])
    i = np.nan_to_num(i, nan=np.nanmin(i) if np.isfinite(i).any() else 0.0)
    out[:, 4] = (i - i.mean()) / max(i.std(), 1e-3)
    return out


def formant_windows(pcm, fps, n, window_steps):
    from minerf_cli.audio_windows import frame_windows
    from minerf_cli.mel import HOP_S

    half = (window_steps - 1) // 2
    return frame_windows(formant_rows(pcm), fps, 0, n, window_frames=2 * half * HOP_S * fps, hop_s=HOP_S,
                         pad_value=0.0)


def speed_variant(c: dict, s: float) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Audio played ``s`` times faster (resampled, pitch moves too) and the targets time-warped:
    new frame k shows the original frame k * s. Returns pcm, expr, n, original frame index."""
    from jaw_features import speed_perturb

    return speed_perturb(c["pcm"], c["expr"], s)


def pearson(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-8 or np.std(b[ok]) < 1e-8:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def fit_eval(clips: list[dict], train_names: list[str], args, feats: dict) -> dict:
    """Train on the training part of ``train_names`` (plus speed variants); return the model
    and the per-clip training means."""
    from minerf_cli.audio_model.audio_encoder import AudioEncoder
    from minerf_cli.audio_model.train import _lr, _spec_augment

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    X, Y, CID = [], [], []
    means = {}
    for ci, c in enumerate(clips):
        if c["name"] not in train_names:
            continue
        n_train = c["n"] - max(1, int(round(c["n"] * 0.1)))
        ok = np.isfinite(c["expr"]).all(1)
        mu = c["expr"][:n_train][ok[:n_train]].mean(0)
        means[c["name"]] = mu
        for s in args.speed_list:
            w, e, orig = feats[(c["name"], s)]
            sel = (orig < n_train - (args.margin if s != 1.0 else 0)) & np.isfinite(e).all(1)
            sd = np.nanstd(c["expr"][:n_train], 0) if args.target_norm else 1.0
            X.append(w[sel]), Y.append((e[sel] - mu) / sd)
            CID.append(np.full(sel.sum(), ci * 10 + int(s * 100) % 1000))
    X = torch.from_numpy(np.concatenate(X))
    Y = np.concatenate(Y)
    if args.aux > 0:  # auxiliary targets: top PCA scores of the per-clip-centred mouth landmarks
        import pickle

        lmd = pickle.loads(Path(args.lm).read_bytes())
        L = []
        for ci, c in enumerate(clips):
            if c["name"] not in train_names:
                continue
            n_train = c["n"] - max(1, int(round(c["n"] * 0.1)))
            x = lmd[c["name"]].astype(np.float64)
            x = x - np.nanmean(x[:n_train], 0)
            w, e, orig = feats[(c["name"], 1.0)]
            sel = (orig < n_train) & np.isfinite(e).all(1)
            L.append(x[sel])
        L = np.concatenate(L)
        okl = np.isfinite(L).all(1)
        u, sv, vt = np.linalg.svd(L[okl] - L[okl].mean(0), full_matrices=False)
        sc = (np.nan_to_num(L - L[okl].mean(0)) @ vt[:args.aux].T) / (sv[:args.aux] / np.sqrt(okl.sum()))
        sc[~okl] = 0.0
        Y = np.concatenate([Y, 0.1 * args.aux_weight * sc], 1)
    Y = torch.from_numpy(Y.astype(np.float32))
    CID = np.concatenate(CID)
    k = X.shape[2]
    model = AudioEncoder(n_mels=k, emb_dim=Y.shape[1], channels=(64, 64, 128, 128), hidden=128)
    model.set_normalisation(X.mean((0, 1)), X.std((0, 1)))
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.zero_()
        last.weight.mul_(0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=args.wd)
    # runs of consecutive frames for the correlation loss
    order = np.argsort(CID, kind="stable")
    w_jaw = torch.ones(Y.shape[1])
    w_jaw[0] = args.jaw_weight
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.steps, 1e-3)
        ids = rng.integers(0, len(X), args.batch)
        w = X[ids]
        nm = (20 if "mel20" in args.features else 80) if "mel" in args.features else 0
        if nm:
            jitter = torch.empty(len(ids), 1, 1).uniform_(-1.0, 1.0)
            w = torch.cat([w[..., :nm] + jitter, w[..., nm:]], 2)
            w = torch.cat([_spec_augment(w[..., :nm], rng, bands=max(1, nm * 12 // 80)), w[..., nm:]], 2)
        pred = model(w)
        loss = ((pred - Y[ids]) ** 2 * w_jaw).mean()
        if args.corr_weight > 0:
            # correlation loss on runs of consecutive frames of one clip variant
            L = 64
            starts = rng.integers(0, len(order) - L, 4)
            cl = 0.0
            for a in starts:
                idx = order[a:a + L]
                idx = idx[CID[idx] == CID[idx[0]]]
                if len(idx) < 16:
                    continue
                p = model(X[idx])[:, 0]
                t = Y[idx, 0]
                p = p - p.mean()
                t = t - t.mean()
                cl = cl + (1 - (p * t).sum() / (p.norm() * t.norm() + 1e-6))
            loss = loss + args.corr_weight * cl / 4
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    return model, means


class Mean(torch.nn.Module):
    def __init__(self, models):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x):
        return torch.stack([m(x) for m in self.models]).mean(0)


def fit_ens(clips, names, args, feats):
    models = []
    seed = args.seed
    for k in range(args.ensemble):
        args.seed = seed + k
        m, means = fit_eval(clips, names, args, feats)
        models.append(m)
    args.seed = seed
    return (models[0] if len(models) == 1 else Mean(models)), means


@torch.no_grad()
def predict(model, w: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    if SMOOTH[0] <= 0:
        return torch.cat([model(torch.from_numpy(w[a:a + 1024])) for a in range(0, len(w), 1024)]).numpy()
    out = torch.cat([model(torch.from_numpy(w[a:a + 1024])) for a in range(0, len(w), 1024)]).numpy()
    return gaussian_filter1d(out, SMOOTH[0], axis=0, mode="nearest")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="run")
    ap.add_argument("--real", default="/tmp/minerf-real/*.h5")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/jawexp/cache.pkl"))
    ap.add_argument("--log", type=Path, default=Path("/tmp/jawexp/log.jsonl"))
    ap.add_argument("--features", default="mel")
    ap.add_argument("--speeds", default="1.0")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=int, default=0)
    ap.add_argument("--target-sigma", type=float, default=0.0)
    ap.add_argument("--corr-weight", type=float, default=0.0)
    ap.add_argument("--jaw-weight", type=float, default=1.0)
    ap.add_argument("--splits", default="tails,whole")
    ap.add_argument("--ensemble", type=int, default=1, help="average this many models (seeds seed..seed+k-1)")
    ap.add_argument("--window", type=float, default=0.32)
    ap.add_argument("--aux", type=int, default=0, help="auxiliary targets: this many mouth-landmark PCA scores")
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--hold", default=",".join(HOLD), help="clips left out of the 'whole' split")
    ap.add_argument("--phones", default="", help="phone-id cache (asrph / allph features)")
    ap.add_argument("--make-lm", default="", help="write the mouth-landmark cache (--aux) here and exit")
    ap.add_argument("--make-phones", default="", help="write the phone-id cache (pocketsphinx) here and exit")
    ap.add_argument("--target-norm", action="store_true", help="residual targets divided by each clip's std")
    ap.add_argument("--smooth", type=float, default=1.0, help="output smoothing sigma (frames)")
    ap.add_argument("--lm", default="/tmp/jawexp/lm.pkl", help="mouth-landmark cache for --aux")
    args = ap.parse_args()
    torch.set_num_threads(1)
    SMOOTH[0] = args.smooth
    args.speed_list = [float(s) for s in args.speeds.split(",")]
    from minerf_cli.audio_model.bundle import AudioBundle, default_config
    from minerf_cli.audio_model.train import mouth_set_indices

    t0 = time.time()
    names, idx = mouth_set_indices()
    bundle = AudioBundle(default_config(names, idx, window_seconds=args.window), "cpu")
    stores = sorted(Path(p) for p in glob.glob(args.real))
    clips = load_cache(stores, args.cache)
    if args.make_lm:
        from jaw_features import make_landmark_cache

        make_landmark_cache(stores, args.make_lm)
        return
    if args.make_phones:
        from jaw_features import make_phone_cache

        make_phone_cache(clips, args.make_phones)
        return
    feats = {}
    if args.phones:
        import pickle

        PHONE_CACHE.update(pickle.loads(Path(args.phones).read_bytes()))
    for c in clips:
        CURRENT[0] = c["name"]
        for s in args.speed_list:
            if s == 1.0:
                pcm, e, n, orig = c["pcm"], c["expr"], c["n"], np.arange(c["n"], dtype=np.float64)
            else:
                pcm, e, n, orig = speed_variant(c, s)
            if args.target_sigma > 0:
                from scipy.ndimage import gaussian_filter1d
                e = np.where(np.isfinite(e), e, np.nanmean(e, 0))
                e = gaussian_filter1d(e, args.target_sigma, axis=0, mode="nearest")
            feats[(c["name"], s)] = (clip_features(bundle, pcm, c["fps"], n, args.features), e, orig)
    t_feat = time.time() - t0
    energy = {}
    for c in clips:
        w = bundle.windows(c["pcm"], c["fps"], c["n"])
        h = w.shape[1] // 2
        energy[c["name"]] = w[:, h - 2:h + 3, 5:40].mean((1, 2))
    res = {"name": args.name, "args": {k: v for k, v in vars(args).items() if k not in ("log", "cache", "real")}}
    allnames = [c["name"] for c in clips]
    if "tails" in args.splits:
        model, means = fit_ens(clips, allnames, args, feats)
        P, T, per = [], [], {}
        blend = {b: [] for b in BETAS}
        for c in clips:
            n_train = c["n"] - max(1, int(round(c["n"] * 0.1)))
            w = feats[(c["name"], 1.0)][0]
            pw = predict(model, w)[:, 0]
            p = pw[n_train:] + means[c["name"]][0]
            y = c["expr"][n_train:, 0]
            P.append(p), T.append(y)
            per[c["name"]] = round(pearson(p, y), 3)
            e = energy[c["name"]]
            for b in BETAS:
                blend[b].append(pearson(z(pw)[n_train:] + b * z(e)[n_train:], y))
        res["tails_blend_median"] = {b: round(float(np.nanmedian(v)), 3) for b, v in blend.items()}
        res["tails_pooled"] = round(pearson(np.concatenate(P), np.concatenate(T)), 3)
        res["tails_median"] = round(float(np.nanmedian(list(per.values()))), 3)
        res["tails_per_clip"] = per
    if "whole" in args.splits:
        hold = args.hold.split(",")
        model, means = fit_ens(clips, [n for n in allnames if n not in hold], args, feats)
        res["whole"] = {}
        for c in clips:
            if c["name"] in hold:
                p = predict(model, feats[(c["name"], 1.0)][0])[:, 0]
                res["whole"][c["name"]] = round(pearson(p, c["expr"][:, 0]), 3)
                res.setdefault("whole_blend", {})[c["name"]] = {
                    b: round(pearson(z(p) + b * z(energy[c["name"]]), c["expr"][:, 0]), 3) for b in BETAS}
                y = c["expr"][:, 0]
                res.setdefault("whole_lags", {})[c["name"]] = {
                    L: round(pearson(p[max(0, -L):len(p) - max(0, L)], y[max(0, L):len(y) - max(0, -L)]), 3)
                    for L in range(-6, 7, 2)}  # L > 0: tracked frame t + L vs predicted frame t
    res["seconds"] = round(time.time() - t0, 1)
    res["feature_seconds"] = round(t_feat, 1)
    line = json.dumps(res)
    print(line)
    with open(args.log, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
