#!/usr/bin/env python
"""Acceptance evaluation of the audio model (`minerf encode-audio --fit`): docs/audio.md.

    python scripts/eval_audio.py [--work /tmp/audio_eval] [--real '/tmp/minerf-real/*.h5'] [--steps 1000]

1. synthetic: `minerf synth --ids 6 --seconds 20 --size 256 --seed 5` + prep --size 256 + fit3dmm
   (made under WORK/synth unless there already), fit with the last 10% of each clip held out;
   held-out jawOpen correlation of the predicted vs the TRACKED jawOpen and vs the synth ground
   truth (_gt.npz "expression", columns in its "expression_names").
2. real: the tracked real stores (paths or a glob; never copied), fit on all with their last 10%
   held out; held-out jawOpen correlation per clip and pooled.
3. sync on whole unseen clips (the acceptance; --sync-holdout): a separate fit without those clips,
   then each held-out clip's offset / confidence over the whole clip, aligned and with the audio
   shifted by 10 frames, and on its consecutive 5 s segments; and the predicted vs tracked
   jawOpen correlation over each whole unseen clip.
4. sync (older, noisy: 12-90 frames): on the held-out part of the real clip with the longest held-out part: the offset found
   (target 0 +- 1) and its confidence, and the same with the audio shifted by 10 frames
   (video lagging): the offset found there (target +10) and the confidence of offset 0 (median
   distance minus the distance at offset 0; clearly lower than for the aligned audio). The fit
   summary adds, for every real clip, the held-out offset (aligned: "sync_offsets", and with the
   audio shifted by 10 frames for clips with >= 45 held-out frames: "sync_offsets_shift10",
   "sync_shift10_recovered" = [found within +-1 of +10, clips]).

Every jawOpen figure is also given as "legacy_...": the same trained model predicting as before
the speech-energy blend (smoothing sigma 1, ``energy=False``), a before/after on one fit.

Prints one JSON object; skips (message, exit 0) when ../shared or the real stores are absent.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def sh(*args: str) -> str:
    res = subprocess.run(["minerf", "-q", *args], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"minerf {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


def make_synth(work: Path) -> list[Path]:
    videos, stores = work / "videos", work / "stores"
    if not videos.is_dir():
        sh("synth", "-o", str(videos), "--ids", "6", "--seconds", "20", "--size", "256", "--seed", "5")
    stores.mkdir(parents=True, exist_ok=True)
    out = []
    for v in sorted(videos.glob("*.mp4")):
        s = stores / f"{v.stem}.h5"
        if not s.exists():
            sh("prep", str(v), "-o", str(s), "--size", "256")
        import h5py

        with h5py.File(s) as f:
            tracked = "tracking" in f
        if not tracked:
            sh("fit3dmm", str(s))
        out.append(s)
    return out


def fit(stores: list[Path], out: Path, steps: int, extra: list[str] = ()) -> dict:
    return json.loads(sh("encode-audio", "--fit", *map(str, stores), "-o", str(out), "--steps", str(steps),
                         "--force", *extra))


def pearson(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def read_jaw(store: Path) -> tuple[float, int, np.ndarray, np.ndarray]:
    """A tracked store's fps, frame count, 16 kHz audio (S,) and tracked jawOpen (N,)."""
    import h5py

    from minerf_cli.store import expression_names

    with h5py.File(store) as f:
        fps = float(f["frames"].attrs["fps"])
        n = int(f["frames"].shape[0])
        pcm = f["audio/pcm"][()]
        names = expression_names(f)
        tracked = f["tracking/expression"][()][:, names.index("jawOpen")]
    return fps, n, pcm, tracked


def predict_jaw(bundle, w, ident=None, legacy: bool = False) -> np.ndarray:
    """Predicted jawOpen of windows ``w`` (one clip); ``legacy``: as before the energy blend
    (smoothing sigma 1 frame, no speech-energy envelope), from the same trained weights."""
    cfg = bundle.config["models"]["expression"]
    sigma = cfg.get("smooth_sigma_frames")
    if legacy:
        cfg["smooth_sigma_frames"] = 1.0
    try:
        p = bundle.predict_expressions(w, identity=ident, energy=not legacy)
    finally:
        if sigma is None:
            cfg.pop("smooth_sigma_frames", None)
        else:
            cfg["smooth_sigma_frames"] = sigma
    return p[:, bundle.mouth_names.index("jawOpen")]


def heldout_jaw(bundle, store: Path, test_fraction: float = 0.1, legacy: bool = False):
    """(predicted, tracked) jawOpen on the held-out frames of one store, and the first held-out frame."""
    fps, n, pcm, tracked = read_jaw(store)
    n0 = n - max(1, int(round(n * test_fraction)))
    w = bundle.windows(pcm, fps, n)[n0:]
    # a residual model adds the speaker's mean pose (the store's training-part mean, kept in the bundle)
    ident = store.stem if store.stem in bundle.identity_names else None
    return predict_jaw(bundle, w, ident, legacy), tracked[n0:], n0


def synthetic(work: Path, steps: int) -> dict:
    from minerf_cli.audio_model.bundle import AudioBundle

    stores = make_synth(work)
    summary = fit(stores, work / "audio_model", steps)
    bundle = AudioBundle.load(work / "audio_model")
    P, T, G, per, PL = [], [], [], [], []
    for s in stores:
        pred, tracked, n0 = heldout_jaw(bundle, s)
        gt = np.load(work / "videos" / f"{s.stem}_gt.npz")
        names = [str(x) for x in gt["expression_names"]]
        g = gt["expression"][n0:n0 + len(pred), names.index("jawOpen")]
        P.append(pred), T.append(tracked), G.append(g)
        PL.append(heldout_jaw(bundle, s, legacy=True)[0])
        per.append({"clip": s.stem, "r_tracked": round(pearson(pred, tracked), 3), "r_gt": round(pearson(pred, g), 3),
                    "r_tracked_vs_gt": round(pearson(tracked, g), 3)})
    P, T, G, PL = map(np.concatenate, (P, T, G, PL))
    return {"stores": len(stores), "heldout_frames": len(P),
            "jawOpen_r_tracked": round(pearson(P, T), 3), "jawOpen_r_gt": round(pearson(P, G), 3),
            "legacy_jawOpen_r_tracked": round(pearson(PL, T), 3), "legacy_jawOpen_r_gt": round(pearson(PL, G), 3),
            "tracker_r_gt": round(pearson(T, G), 3), "per_clip": per,
            "fit": {k: summary[k] for k in ("losses", "seconds")},
            "heldout": {k: summary["heldout"][k] for k in ("correlation", "infonce_accuracy", "infonce_chance",
                                                           "sync_offsets")}}


def real(stores: list[Path], work: Path, steps: int) -> dict:
    import h5py

    from minerf_cli.audio_model.bundle import AudioBundle

    summary = fit(stores, work / "audio_model_real", steps)
    bundle = AudioBundle.load(work / "audio_model_real")
    P, T, PL, per = [], [], [], []
    for s in stores:
        pred, tracked, _ = heldout_jaw(bundle, s)
        old = heldout_jaw(bundle, s, legacy=True)[0]
        P.append(pred), T.append(tracked), PL.append(old)
        per.append({"clip": s.stem, "frames": len(pred), "jawOpen_r": round(pearson(pred, tracked), 3),
                    "legacy_jawOpen_r": round(pearson(old, tracked), 3)})
    P, T, PL = map(np.concatenate, (P, T, PL))
    out = {"stores": len(stores), "heldout_frames": len(P), "jawOpen_r_pooled": round(pearson(P, T), 3),
           "jawOpen_r_median_clip": round(float(np.median([c["jawOpen_r"] for c in per])), 3),
           "legacy_jawOpen_r_pooled": round(pearson(PL, T), 3),
           "legacy_jawOpen_r_median_clip": round(float(np.median([c["legacy_jawOpen_r"] for c in per])), 3),
           "per_clip": per,
           "fit": {k: summary[k] for k in ("losses", "seconds")},
           "heldout": {k: summary["heldout"].get(k) for k in ("correlation", "infonce_accuracy", "infonce_chance",
                                                              "sync_offsets", "sync_aligned_within1",
                                                              "sync_offsets_shift10", "sync_shift10_recovered")}}
    # sync on the longest held-out part
    best = max(stores, key=lambda s: h5py.File(s)["frames"].shape[0])
    with h5py.File(best) as f:
        fps = float(f["frames"].attrs["fps"])
        n = int(f["frames"].shape[0])
        pcm = f["audio/pcm"][()]
        lm = f["landmarks/points"][()]
    n0 = n - max(1, int(round(n * 0.1)))
    seg = lambda k: pcm[int(round((n0 + k) / fps * 16000)):]  # noqa: E731 - audio of frame n0 + k onwards
    aligned = bundle.sync(seg(0), fps, lm[n0:])
    # the audio 10 frames early (its frame t is the video's frame t + 10): the video lags by 10
    shifted = bundle.sync(seg(10), fps, lm[n0:])

    def conf_at_zero(r):
        d = 1 - np.asarray(r["similarity"])
        return float(np.median(d) - d[r["offsets"].index(0)])

    out["sync"] = {"clip": best.stem, "frames": n - n0,
                   "aligned": {"offset": aligned["offset"], "confidence": round(aligned["confidence"], 4),
                               "confidence_at_offset_0": round(conf_at_zero(aligned), 4)},
                   "audio_shifted_10": {"offset": shifted["offset"], "confidence": round(shifted["confidence"], 4),
                                        "confidence_at_offset_0": round(conf_at_zero(shifted), 4)}}
    return out


def sync_scan(bundle, store: Path, start: int = 0, stop: int | None = None, shift: int = 0) -> dict:
    """Sync of video frames start..stop-1 of ``store`` against the audio ``shift`` frames early
    (audio frame t + shift paired with video frame t: the video lags by ``shift``; expect +shift):
    offset, confidence (median - min distance over -15..15) and the confidence at offset 0. The
    audio features are made from the whole clip's audio (its mel normalisation), then cut."""
    import h5py
    import torch

    from minerf_cli.audio_model.losses import sync_scores

    with h5py.File(store) as f:
        fps = float(f["frames"].attrs["fps"])
        pcm = f["audio/pcm"][()].astype(np.float32)
        lm = f["landmarks/points"][()].astype(np.float32)
        lm[~f["landmarks/valid"][()].astype(bool)] = np.nan
    n = len(lm)
    stop = n - shift if stop is None else min(stop, n - shift)
    a = bundle.audio_embedding(bundle.windows(pcm, fps, n))[start + shift:stop + shift]
    m = bundle.mouth_embedding(lm)[start:stop]
    az, mz = bundle.sync_embeddings(a, m)
    r = sync_scores(torch.from_numpy(az), torch.from_numpy(mz), max_offset=15)
    d = 1.0 - r.similarity.numpy()
    return {"offset": r.best_offset, "confidence": round(r.confidence, 4),
            "confidence_at_offset_0": round(float(np.median(d) - d[r.offsets.tolist().index(0)]), 4),
            "frames": int(stop - start)}


def whole_clip_jaw_r(bundle, store: Path, legacy: bool = False) -> float:
    """Pearson r of the predicted vs the tracked jawOpen over every frame of a clip the
    model never saw (its speaker's mean pose: the model's training mean; r ignores it)."""
    fps, n, pcm, tracked = read_jaw(store)
    pred = predict_jaw(bundle, bundle.windows(pcm, fps, n), legacy=legacy)
    return round(pearson(pred, tracked), 3)


def sync_heldout_clips(stores: list[Path], hold: list[str], work: Path, steps: int, seg_seconds: float = 5.0) -> dict:
    """The sync acceptance on whole clips the model never saw: fit on every store except
    ``hold`` (their speakers' other clips stay in), then for each held-out clip the offset and
    confidence over the whole clip with the true alignment and with the audio shifted by 10
    frames, and the same on consecutive ``seg_seconds`` segments (how often +-1 is met)."""
    import h5py

    from minerf_cli.audio_model.bundle import AudioBundle

    train = [s for s in stores if s.stem not in hold]
    held = [s for s in stores if s.stem in hold]
    if not held or not train:
        return {"skipped": f"held-out clips {hold} not among the stores"}
    summary = fit(train, work / "audio_model_sync", steps)
    bundle = AudioBundle.load(work / "audio_model_sync")
    out = {"train_stores": len(train), "clips": []}
    for s in held:
        with h5py.File(s) as f:
            n, fps = int(f["frames"].shape[0]), float(f["frames"].attrs["fps"])
        seg = int(round(seg_seconds * fps))
        segs = [(a, a + seg) for a in range(0, n - seg - 10 + 1, seg)]
        seg0 = [sync_scan(bundle, s, a, b, 0) for a, b in segs]
        seg10 = [sync_scan(bundle, s, a, b, 10) for a, b in segs]
        out["clips"].append({
            "clip": s.stem, "frames": n, "whole_clip_jawOpen_r": whole_clip_jaw_r(bundle, s),
            "legacy_whole_clip_jawOpen_r": whole_clip_jaw_r(bundle, s, legacy=True),
            "whole_aligned": sync_scan(bundle, s, 0, n - 10, 0),
            "whole_audio_shifted_10": sync_scan(bundle, s, 0, n - 10, 10),
            f"segments_{seg_seconds:g}s": {
                "aligned_offsets": [e["offset"] for e in seg0],
                "shifted_offsets": [e["offset"] for e in seg10],
                "aligned_within1": sum(abs(e["offset"]) <= 1 for e in seg0),
                "shifted_within1_of_10": sum(abs(e["offset"] - 10) <= 1 for e in seg10),
                "segments": len(segs),
                "mean_confidence_at_0_aligned": round(float(np.mean([e["confidence_at_offset_0"] for e in seg0])), 4),
                "mean_confidence_at_0_shifted": round(float(np.mean([e["confidence_at_offset_0"] for e in seg10])), 4),
            }})
    out["fit_heldout_10pct"] = {k: summary["heldout"].get(k) for k in ("sync_offsets", "sync_offsets_shift10",
                                                                       "infonce_accuracy")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/audio_eval"))
    ap.add_argument("--real", nargs="+", default=["/tmp/minerf-real/*.h5"], help="real tracked stores (globs)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--sync-holdout", default="styletalk_Obama_clip2_av,styletalk_andrew_clip_2_av",
                    help="real clips (store stems) left out of a separate fit for the whole-clip sync test ('' skips)")
    args = ap.parse_args()
    if not (REPO.parent / "shared").is_dir():
        print(f"eval_audio: {REPO.parent / 'shared'} is absent: skipping", file=sys.stderr)
        return
    real_stores = sorted(Path(p) for pat in args.real for p in glob.glob(pat))
    if not real_stores and not args.skip_real:
        print(f"eval_audio: no real stores at {' '.join(args.real)}: skipping", file=sys.stderr)
        return
    result = {}
    if not args.skip_synth:
        result["synthetic"] = synthetic(args.work / "synth", args.steps)
        print(json.dumps({"synthetic": result["synthetic"]}), file=sys.stderr)
    if not args.skip_real:
        result["real"] = real(real_stores, args.work, args.steps)
    hold = [h for h in args.sync_holdout.split(",") if h]
    if hold and real_stores:
        result["sync_heldout_clips"] = sync_heldout_clips(real_stores, hold, args.work, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
