"""Synthetic talking heads with exactly known identity, pose, expression and camera.

For each identity: a random ICT face (identity coefficients ~ N(0, 0.6^2)) with its own skin,
hair, eyes, shirt, backdrop and framing; smooth random head motion; blinks; speech-like audio
whose loudness and vowels drive the jaw and lips. Each clip is three files:

    <stem>.mp4     H.264 + AAC (the audio below), size x size, fps
    <stem>.wav     16 kHz mono PCM
    <stem>_gt.npz  the ground truth (see GT_README, also stored in the file as "README")

Everything is seeded and deterministic. Rendering is our own CPU rasterizer (raster.py)
through synth_head.HeadRenderer; the audio comes from synth_audio.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy.interpolate import PchipInterpolator

from . import synth_audio
from .errors import UsageError
from .facemodel import load_face_model
from .fsutil import atomic_output, check_output
from .synth_head import PIVOT, HeadRenderer, Look, camera_from_head, random_look

GT_FORMAT = "minerf-synth-gt"
GT_VERSION = 1
GT_README = """minerf synthetic talking head: ground truth (format minerf-synth-gt, version 1).

Head space: the ICT face model's, in cm, +x the subject's left, +y up, +z towards the viewer.
Camera: OpenCV, x right, y down, z forward; pixel (i, j) covers [j, j+1) x [i, i+1) and its
centre is (j + 0.5, i + 0.5), so the principal point (size/2, size/2) is the image centre
(subtract 0.5 for OpenCV's integer-centre convention).
camera_from_head (N, 4, 4): x_cam = R x_head + t; for a frontal head R = diag(1, -1, -1);
  projection: u = fx x_cam/z_cam + cx, v = fy y_cam/z_cam + cy with intrinsics (3, 3).
  R = diag(1, -1, -1) @ R_head, R_head = Ry(yaw) @ Rx(pitch) @ Rz(roll) about head-space axes,
  turning about pivot_cm (top of the neck), plus translation_cm (head space) per frame.
yaw_pitch_roll_deg (N, 3): yaw > 0 turns the face towards the subject's left (image right),
  pitch > 0 looks down, roll > 0 tilts the head counter-clockwise in the image.
expression (N, 53): ICT blendshape weights in expression_names order; all but jawOpen,
  mouthClose, mouthFunnel, mouthPucker, mouthSmile_L/R, mouthStretch_L/R, browInnerUp_L/R,
  browOuterUp_L/R, eyeBlink_L/R are 0. identity (100,): ICT identity coefficients.
Frame k shows time k/fps; its audio window is [k/fps, (k+1)/fps) of the 16 kHz wav.
Geometry: model.vertices(identity, expression[k]) mapped by camera_from_head[k] is exactly what
  was rendered, except (a) the shoulder flare (triangles entirely below y = -11.3 cm) is not
  drawn, (b) below y = -8.3 cm the neck blends linearly into the static torso's frame, (c) the
  eye and mouth holes are filled (sunk slightly behind the lids / lips).
"""


# ------------------------------------------------------------------ motion and expression

def smooth_track(n: int, fps: float, rng: np.random.Generator, lo: float, hi: float,
                 period: tuple[float, float] = (1.0, 2.5)) -> np.ndarray:
    """(n,) smooth random signal within [lo, hi]: monotone cubic through random knots."""
    duration = n / fps
    times = [0.0]
    while times[-1] <= duration:
        times.append(times[-1] + rng.uniform(*period))
    values = rng.uniform(lo, hi, len(times))
    return PchipInterpolator(times, values)(np.arange(n) / fps)


def rotation_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) R = Ry(yaw) @ Rx(pitch) @ Rz(roll), angles in degrees, head-space axes."""
    y, p, r = np.radians([yaw, pitch, roll])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    # pitch > 0 looks down: +z (the nose) goes to -y
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def head_motion(n: int, fps: float, rng: np.random.Generator, loud: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Yaw/pitch/roll in degrees (n, 3) within +-20/+-10/+-5 and a translation (n, 3) in cm."""
    yaw = smooth_track(n, fps, rng, -17, 17, (1.2, 3.0)) + smooth_track(n, fps, rng, -0.6, 0.6, (0.25, 0.5))
    pitch = smooth_track(n, fps, rng, -7, 6, (1.0, 2.5)) + smooth_track(n, fps, rng, -0.4, 0.4, (0.25, 0.5))
    if loud is not None:  # small nods on stressed syllables
        pitch = pitch + 2.0 * (loud - loud.mean())
    roll = smooth_track(n, fps, rng, -4, 4, (1.5, 3.5))
    ypr = np.stack([np.clip(yaw, -20, 20), np.clip(pitch, -10, 10), np.clip(roll, -5, 5)], 1)
    delta = np.stack([smooth_track(n, fps, rng, -0.5, 0.5, (1.5, 3.5)),
                      smooth_track(n, fps, rng, -0.3, 0.3, (1.5, 3.5)),
                      smooth_track(n, fps, rng, -0.8, 0.8, (2.0, 4.0))], 1)
    return ypr, delta


def blink_track(n: int, fps: float, rng: np.random.Generator, duration: float = 0.15) -> np.ndarray:
    """(n,) eye closure in [0, 1]: ~150 ms blinks every 2-5 s."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    tb = rng.uniform(0.5, 2.5)
    while tb < n / fps:
        x = (t - tb) / duration  # 0..1 over the blink
        out = np.maximum(out, np.where((x > 0) & (x < 1), np.sin(np.pi * np.clip(x, 0, 1)) ** 1.5, 0.0))
        tb += rng.uniform(2.0, 5.0)
    return out


def expression_track(speech: synth_audio.Speech, n: int, fps: float, rng: np.random.Generator,
                     names: tuple[str, ...]) -> np.ndarray:
    """(n, E) blendshape weights: the audio drives jaw and lips; brows and blinks are random."""
    tr = {k: speech.per_frame(k, fps, n) for k in synth_audio.TRACKS}

    def s01(lo=0.0, hi=1.0, period=(1.0, 3.0)):
        return smooth_track(n, fps, rng, lo, hi, period)

    mood = s01(0, 1, (2.0, 4.0))
    w = {
        "jawOpen": 0.7 * tr["open"],
        "mouthFunnel": 0.45 * tr["funnel"] + 0.05 * s01(),
        "mouthPucker": 0.45 * tr["pucker"] + 0.05 * s01(),
        "mouthClose": 0.25 * s01() * (1 - tr["loud"]),
    }
    for side in ("L", "R"):
        w[f"mouthStretch_{side}"] = 0.3 * tr["spread"] + 0.12 * s01()
        w[f"mouthSmile_{side}"] = 0.35 * mood + 0.08 * s01()
        emph = 0.2 * tr["loud"] * s01(0.3, 1.0, (1.5, 3.0))
        w[f"browInnerUp_{side}"] = 0.3 * s01(0, 1, (1.5, 3.5)) ** 2 + emph
        w[f"browOuterUp_{side}"] = 0.25 * s01(0, 1, (1.5, 3.5)) ** 2 + emph
    blink = blink_track(n, fps, rng)
    w["eyeBlink_L"] = w["eyeBlink_R"] = blink
    ex = np.zeros((n, len(names)), np.float32)
    for name, value in w.items():
        hi = 1.0 if name.startswith("eyeBlink") else (0.7 if name == "jawOpen" else 0.5)
        ex[:, names.index(name)] = np.clip(value, 0.0, hi)
    return ex


# ------------------------------------------------------------------ clips

def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def clip_plan(identity_seed: int, seconds: float, size: int = 512, fps: float = 25.0,
              motion_seed: int | None = None) -> dict:
    """Everything about a clip except its pixels: look, audio, poses, expressions (seeded)."""
    if seconds <= 0 or fps <= 0 or size < 32:
        raise UsageError(f"need seconds > 0, fps > 0 and size >= 32 (got {seconds}, {fps}, {size})")
    m = load_face_model()
    mseed = identity_seed if motion_seed is None else motion_seed
    look = random_look(_seed(identity_seed, 0))
    n = int(round(seconds * fps))
    if n < 1:
        raise UsageError(f"{seconds} s at {fps} fps is no frame")
    speech = synth_audio.speech(n / fps, _seed(mseed, 1), f0=look.f0)
    rng = _seed(mseed, 2)
    ex = expression_track(speech, n, fps, rng, m.expression_names)
    ypr, delta = head_motion(n, fps, rng, loud=speech.per_frame("loud", fps, n))
    return {"look": look, "speech": speech, "expression": ex, "ypr": ypr, "delta": delta,
            "n": n, "fps": float(fps), "size": int(size)}


def render_frames(plan: dict, renderer: HeadRenderer | None = None) -> Iterator[np.ndarray]:
    """Yield the clip's frames (H, W, 3) uint8."""
    r = renderer or HeadRenderer(plan["look"], plan["size"])
    for k in range(plan["n"]):
        M = camera_from_head(rotation_ypr(*plan["ypr"][k]), plan["delta"][k], r.t_cam)
        yield r.render(plan["expression"][k], M)


def _look_json(look: Look) -> str:
    d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(look).items() if k != "identity"}
    return json.dumps(d)


def synthesize_clip(stem: Path, identity_seed: int = 0, seconds: float = 4.0, size: int = 512,
                    fps: float = 25.0, motion_seed: int | None = None, force: bool = False,
                    progress: Callable[[int], None] | None = None) -> dict:
    """Render one clip to ``<stem>.mp4``, ``<stem>.wav`` and ``<stem>_gt.npz``.

    identity_seed picks the person (face, colours, framing, voice); motion_seed (default:
    identity_seed) the audio, head motion and expressions. progress(k) is called after each
    frame. Returns {"video", "audio", "gt", "frames", "seconds", "fps", "size", "identity_seed"}.
    """
    import soundfile as sf  # noqa: PLC0415 - only the video path needs soundfile and ffmpeg

    from .video import write_video  # noqa: PLC0415

    stem = Path(stem)
    video, audio, gt = (stem.parent / f"{stem.name}{s}" for s in (".mp4", ".wav", "_gt.npz"))
    for p in (video, audio, gt):
        check_output(p, force)
    plan = clip_plan(identity_seed, seconds, size, fps, motion_seed)
    renderer = HeadRenderer(plan["look"], plan["size"])
    n, fps = plan["n"], plan["fps"]
    cams = np.stack([camera_from_head(rotation_ypr(*plan["ypr"][k]), plan["delta"][k], renderer.t_cam)
                     for k in range(n)]).astype(np.float32)

    with atomic_output(audio, force) as tmp:
        sf.write(str(tmp), plan["speech"].pcm, plan["speech"].rate, format="WAV", subtype="PCM_16")

    def frames():
        for k, frame in enumerate(render_frames(plan, renderer)):
            yield frame
            if progress is not None:
                progress(k + 1)

    with atomic_output(video, force) as tmp:
        written = write_video(tmp, frames(), fps, audio_path=audio)

    m = load_face_model()
    with atomic_output(gt, force) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            format=np.array(GT_FORMAT), version=np.array(GT_VERSION), README=np.array(GT_README),
            camera_from_head=cams, intrinsics=renderer.K.astype(np.float32),
            expression=plan["expression"].astype(np.float32),
            expression_names=np.array(m.expression_names),
            identity=np.asarray(plan["look"].identity, np.float32),
            fps=np.array(fps), size=np.array(plan["size"]), audio_rate=np.array(plan["speech"].rate),
            yaw_pitch_roll_deg=plan["ypr"].astype(np.float32),
            translation_cm=plan["delta"].astype(np.float32), pivot_cm=PIVOT.astype(np.float32),
            identity_seed=np.array(identity_seed), look=np.array(_look_json(plan["look"])),
        )
    return {"video": str(video), "audio": str(audio), "gt": str(gt), "frames": int(written),
            "seconds": n / fps, "fps": fps, "size": plan["size"], "identity_seed": int(identity_seed)}


def identity_seeds(seed: int, ids: int) -> list[int]:
    """The identity seeds ``synthesize`` uses for ``ids`` clips from a master ``seed``."""
    return [int(s) for s in np.random.SeedSequence([int(seed), 7919]).generate_state(ids)]


def synthesize(out_dir: Path, ids: int = 2, seconds: float = 4.0, size: int = 512, fps: float = 25.0,
               seed: int = 0, force: bool = False, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Render ``ids`` clips (one person each) into ``out_dir`` as id00.mp4/.wav/_gt.npz, ...

    progress(n) is called with the total number of frames rendered so far. Returns the
    per-clip dicts of :func:`synthesize_clip`.
    """
    if ids < 1:
        raise UsageError(f"--ids must be >= 1 (got {ids})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips, done = [], 0
    for k, iseed in enumerate(identity_seeds(seed, ids)):
        base = done

        def step(i, base=base):
            if progress is not None:
                progress(base + i)

        clip = synthesize_clip(out_dir / f"id{k:02d}", identity_seed=iseed, seconds=seconds, size=size,
                               fps=fps, force=force, progress=step)
        done += clip["frames"]
        clips.append(clip)
    return clips


# ------------------------------------------------------------------ ready-to-train stores
