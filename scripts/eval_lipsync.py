#!/usr/bin/env python
"""Lipsync acceptance, CPU side: judge a `minerf lipsync --store` render (issue 4, docs/audio.md).

    python scripts/eval_lipsync.py --render gpu_out/lipsync.h5 \\
        --audio ../shared/data/talking/audio/vretalk_audio_1.wav \\
        --other ../shared/data/talking/audio/vretalk_audio_2.wav \\
        --audio-model audio_model/ [--mp4 gpu_out/lipsync.mp4] [--work /tmp/eval_lipsync]
    python scripts/eval_lipsync.py --render sweep_render.h5     # no audio: step 2 only

1. the mp4: the one given (--mp4, e.g. written by `minerf lipsync -o` where ffmpeg exists), else
   one made here from the render store's frames and its /audio/pcm (the speech lipsync muxed,
   with the same writer, minerf_cli.video.write_video); its duration (ffprobe-style probe) and
   its audio track's length vs the driving audio's duration (equal within one frame);
2. re-tracking: `minerf prep MP4` + `minerf fit3dmm` (mediapipe + our 3DMM fit, on the rendered
   video as a user would get it); Pearson correlation of the re-tracked jawOpen with the jawOpen
   the model was asked to render (/render/expression of the store), over frames tracked in both;
3. sync (our contrastive audio/mouth model, AudioBundle.sync over +-15 frames) of the re-tracked
   mouth with the driving audio and with the other audio (cut / padded to the same length):
   offset, confidence (median - min distance) and the confidence at offset 0.
Without --audio (e.g. a `minerf transfer --store` render of scripts/jaw_sweep.py's source)
only the re-tracking runs, on a silent mp4.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def sh(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "minerf_cli.app", "-q", *map(str, args)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"minerf {' '.join(map(str, args))} failed ({res.returncode}): {res.stderr.strip()[-800:]}")
    return res.stdout


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-8 or np.std(b[ok]) < 1e-8:
        return None
    return round(float(np.corrcoef(a[ok], b[ok])[0, 1]), 4)


def read_render(path: Path) -> dict:
    import h5py

    from minerf_cli.facemodel import load_face_model

    with h5py.File(path) as f:
        if "render" not in f or "expression" not in f["render"]:
            sys.exit(f"{path}: no /render/expression (write it with `minerf lipsync ... --store`)")
        fps = float(f["frames"].attrs["fps"])
        n = int(f["frames"].shape[0])
        requested = f["render/expression"][()]
        pcm = f["audio/pcm"][()].astype(np.float32) if "audio" in f else None
    names = list(load_face_model().expression_names)
    return {"fps": fps, "frames": n, "requested": requested, "names": names, "pcm": pcm}


def make_mp4(store: Path, pcm: np.ndarray | None, fps: float, out: Path) -> None:
    import h5py
    import soundfile as sf

    from minerf_cli.store import FrameReader
    from minerf_cli.video import write_video

    with h5py.File(store) as f, tempfile.TemporaryDirectory() as td:
        wav = None
        if pcm is not None:
            wav = Path(td) / "speech.wav"
            sf.write(wav, pcm, 16000)
        write_video(out, iter(FrameReader(f)), fps, audio_path=wav)


def sync_entry(bundle, pcm: np.ndarray, fps: float, lm: np.ndarray) -> dict:
    r = bundle.sync(pcm, fps, lm)
    d = 1.0 - np.asarray(r["similarity"])
    return {"offset": r["offset"], "confidence": round(r["confidence"], 4),
            "confidence_at_offset_0": round(float(np.median(d) - d[r["offsets"].index(0)]), 4),
            "valid_frames": r["valid_frames"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--render", type=Path, required=True, help="store written by `minerf lipsync --store`")
    ap.add_argument("--audio", type=Path, help="the driving speech given to lipsync (none: re-tracking only)")
    ap.add_argument("--other", type=Path, help="another speech (the sync control)")
    ap.add_argument("--audio-model", type=Path)
    ap.add_argument("--mp4", type=Path, help="the mp4 lipsync wrote (default: made here from the store)")
    ap.add_argument("--work", type=Path, help="where the mp4 / re-tracked store go (default: a temp dir)")
    ap.add_argument("--prep-size", type=int, default=None, help="crop size of the re-tracking prep (default: the render's)")
    args = ap.parse_args()

    from minerf_cli.audio import load_audio

    if args.audio is not None and (args.other is None or args.audio_model is None):
        ap.error("--audio needs --other and --audio-model")
    work = args.work or Path(tempfile.mkdtemp(prefix="eval_lipsync_"))
    work.mkdir(parents=True, exist_ok=True)
    r = read_render(args.render)
    fps, n = r["fps"], r["frames"]
    result: dict = {"render": str(args.render), "frames": n, "fps": fps, "video_s": round(n / fps, 4)}
    if args.audio is not None:
        drive = load_audio(args.audio).pcm
        other = load_audio(args.other).pcm
        result.update(audio=str(args.audio), audio_s=round(len(drive) / 16000, 4))

    mp4 = args.mp4
    if mp4 is None:
        if r["pcm"] is None and args.audio is not None:
            sys.exit(f"{args.render}: no /audio in the render store and no --mp4")
        mp4 = work / "lipsync.mp4"
        make_mp4(args.render, r["pcm"] if args.audio is not None else None, fps, mp4)
        result["mp4_made_from_store"] = True
    if args.audio is not None:
        check_mp4(mp4, drive, fps, result)
    lm, t_fps = retrack(args, work, mp4, r, result)
    if args.audio is not None:
        sync(args, lm, t_fps, drive, other, result)
    print(json.dumps(result))


def check_mp4(mp4: Path, drive: np.ndarray, fps: float, result: dict) -> None:
    from minerf_cli.audio import load_audio
    from minerf_cli.video import probe

    info = probe(mp4)
    mp4_audio = load_audio(mp4).pcm
    result["mp4"] = {"path": str(mp4), "duration_s": round(info.duration, 4), "has_audio": info.has_audio,
                     "audio_track_s": round(len(mp4_audio) / 16000, 4),
                     "duration_minus_audio_s": round(info.duration - len(drive) / 16000, 4),
                     "within_one_frame": bool(abs(info.duration - len(drive) / 16000) <= 1.0 / fps + 1e-3)}
    # is the muxed audio the driving speech? (correlation of the first seconds, AAC-decoded)
    k = min(len(mp4_audio), len(drive))
    result["mp4"]["audio_r_with_driving"] = pearson(mp4_audio[:k], drive[:k])


def retrack(args, work: Path, mp4: Path, r: dict, result: dict) -> tuple[np.ndarray, float]:
    """Re-track the mp4 (prep + fit3dmm): jawOpen asked vs re-tracked into result["retrack"];
    returns the re-tracked landmarks (NaN where invalid) and their fps."""
    import h5py

    from minerf_cli.store import FrameReader, expression_names

    n = r["frames"]
    size = args.prep_size
    if size is None:
        with h5py.File(args.render) as f:
            size = FrameReader(f).height
    tracked = work / "retracked.h5"
    if tracked.exists():
        tracked.unlink()
    try:
        prep = json.loads(sh("prep", mp4, "-o", tracked, "--size", size, "--min-valid", "0.5"))
        sh("fit3dmm", tracked)
    except RuntimeError as exc:  # e.g. no face found in the rendered frames
        result["retrack"] = {"error": str(exc)}
        print(json.dumps(result))
        sys.exit(1)
    with h5py.File(tracked) as f:
        tn = expression_names(f)
        te = f["tracking/expression"][()]
        err = f["tracking/fit_error"][()]
        valid = f["landmarks/valid"][()].astype(bool)
        lm = f["landmarks/points"][()].astype(np.float32)
        t_fps = float(f["frames"].attrs["fps"])
    m = min(len(te), n)
    jaw_t = te[:m, tn.index("jawOpen")].astype(np.float64)
    jaw_t[~(valid[:m] & np.isfinite(err[:m]))] = np.nan
    jaw_r = r["requested"][:m, r["names"].index("jawOpen")].astype(np.float64)
    result["retrack"] = {"frames": int(len(te)), "valid_fraction": prep.get("valid_fraction"),
                         "jawOpen_r": pearson(jaw_t, jaw_r),
                         "jawOpen_requested_std": round(float(np.nanstd(jaw_r)), 4),
                         "jawOpen_retracked_std": round(float(np.nanstd(jaw_t)), 4)}
    # lag check: the correlation peak should be at 0
    lags = {}
    for lag in range(-3, 4):
        a = jaw_t[max(0, lag):m + min(0, lag)]
        b = jaw_r[max(0, -lag):m - max(0, lag)]
        lags[lag] = pearson(a, b)
    result["retrack"]["jawOpen_r_by_lag"] = lags
    lm[~valid] = np.nan
    return lm, t_fps


def sync(args, lm: np.ndarray, t_fps: float, drive: np.ndarray, other: np.ndarray, result: dict) -> None:
    """Our sync model on the re-tracked mouth with the driving vs the other audio."""
    from minerf_cli.audio_model.bundle import AudioBundle

    bundle = AudioBundle.load(args.audio_model)
    n_s = int(round(len(lm) / t_fps * 16000))
    fit = lambda x: np.pad(x[:n_s], (0, max(0, n_s - len(x))))  # noqa: E731
    result["sync"] = {"driving": sync_entry(bundle, fit(drive), t_fps, lm),
                      "other": {"audio": str(args.other), **sync_entry(bundle, fit(other), t_fps, lm)}}
    d, o = result["sync"]["driving"], result["sync"]["other"]
    result["sync"]["confidence_driving_minus_other"] = round(d["confidence_at_offset_0"] - o["confidence_at_offset_0"], 4)


if __name__ == "__main__":
    main()
