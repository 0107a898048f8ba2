"""The ``evaluate`` stage: metrics of generated frames against a reference (and a driving) clip.

Inputs: generated frames (a video, a directory of PNG/JPEG frames, or a minerf store's
/frames), a reference (a minerf store, preferred: its /landmarks give the face crops; or a
video / frame directory, whose faces are then found by mediapipe's face mesh) and, for
Exp-Diff, a driving store with /tracking.

Two modes:

* paired (default): generated frame i shows reference frame r_i (r = --ref-frames A:B, else
  the generated store's ``reference_frames`` attribute, else 0..n-1), e.g. a reconstruction
  of the held-out part of a training clip. PSNR, SSIM, LPIPS and CPBD are computed on the
  square face crop of the REFERENCE frame's landmarks (metrics.face_box, scale 1.2), the
  same crop for both frames (MI-NeRF app. E evaluates only the generated face region);
* identity-only (--identity-only, expression transfer / lip-sync): no frame-wise ground
  truth, so no PSNR/SSIM/LPIPS; CPBD on each generated frame's own face crop.

Always: identity (CSIM, ACD, face distance) from dlib's descriptor, each generated frame
against the centroid of the reference frames' descriptors, and the number of generated
frames where mediapipe finds no face (reported, never silently dropped). With --driving:
Exp-Diff, the mean squared difference between the 53 ICT blendshapes that our own tracker
(face mesh + tracking.fit, with the driving store's focal) recovers from the generated
frames and the driving store's /tracking/expression on the corresponding frames.

Lip metrics (:mod:`minerf_cli.lipmetrics`, :mod:`minerf_cli.syncnet`):

* M-LMD (paired mode): the mean distance of the 40 mediapipe lip points of each generated
  frame and its reference frame, over the reference frame's inter-ocular distance, averaged
  over the frames with a face in both. The generated frames' landmarks are the face-mesh run
  that the main loop makes anyway (the same ones Exp-Diff tracks).
* our audio-visual sync (--audio-model DIR): the trained minerf audio model's
  ``AudioBundle.sync`` of the driving audio against the generated frames' landmarks:
  ``minerf_sync_offset_frames`` (> 0: the video lags the audio) and ``minerf_sync_confidence``.
  These are minerf's own scores, not SyncNet's LSE.
* LSE-D / LSE-C (--syncnet WEIGHTS): SyncNet (syncnet_python's release) from the user's
  weight file, scored as syncnet_python does; without the file they are skipped.

The audio is --audio, else the generated store's /audio, else the generated video's audio
track; without any, the audio metrics are skipped.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import h5py
import numpy as np

from . import metrics, store
from .errors import FormatError, MinerfError, UsageError
from .output import progress_bar, state, stderr_console
from .video import probe, read_frames

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IDENTITY_REFERENCE_FRAMES = 32  # reference frames (evenly spaced) whose descriptors make the identity centroid
CROP_SCALE = 1.2
SIGNIFICANT = 6  # digits of the floats in the JSON summary
# metrics averaged over several generated inputs (numbers only; "skipped: ..." strings are left out)
MEAN_KEYS = ("psnr", "ssim", "lpips", "cpbd", "cpbd_reference", "csim", "acd", "face_distance",
             "same_person_fraction", "exp_diff", "exp_diff_mouth", "face_found_fraction", "m_lmd", "m_lmd_px",
             "minerf_sync_offset_frames", "minerf_sync_confidence", "lse_d", "lse_c", "lse_offset_frames")


@dataclass
class EvalOptions:
    ref_frames: str | None = None  # "A:B"
    identity_only: bool = False
    driving: Path | None = None
    driving_frames: str | None = None
    lpips_weights: Path | None = None
    lpips_lin: Path | None = None
    device: str = "auto"
    identity_frames: int = 100  # generated frames (evenly spaced) with dlib descriptors; 0 = all
    crop_scale: float = CROP_SCALE
    audio: Path | None = None  # the speech that drives the generated frames
    audio_model: Path | None = None  # a trained minerf audio model (AudioBundle) for our sync score
    syncnet: Path | None = None  # syncnet_python weights for LSE-D / LSE-C

    def check(self) -> None:
        if (self.lpips_weights is None) != (self.lpips_lin is None):
            raise UsageError("--lpips-weights and --lpips-lin go together (the VGG16 trunk and lpips' linear layers)")
        if self.identity_frames < 0:
            raise UsageError(f"--identity-frames must be >= 0 (got {self.identity_frames})")
        if not 1.0 <= self.crop_scale <= 3.0:
            raise UsageError(f"--crop-scale must be in [1, 3] (got {self.crop_scale})")
        if self.driving_frames is not None and self.driving is None:
            raise UsageError("--driving-frames needs --driving")
        for spec, name in ((self.ref_frames, "--ref-frames"), (self.driving_frames, "--driving-frames")):
            if spec is not None:
                parse_range(spec, None, name)


def parse_range(spec: str, n: int | None, option: str = "--ref-frames") -> np.ndarray:
    """'A:B' (also 'A:' = to the end, ':B' = from 0) -> arange(A, B); checked against n frames."""
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        a = int(parts[0]) if parts[0].strip() else 0
        b = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise UsageError(f"{option} {spec!r}: expected A:B (frame indices, B exclusive)") from None
    if b is None:
        if n is None:
            return np.arange(a, a + 1)  # syntax check only
        b = n
    if a < 0 or b <= a:
        raise UsageError(f"{option} {spec!r}: need 0 <= A < B")
    return np.arange(a, b)


def _ranges(indices: Sequence[int]) -> str:
    """'3, 10-14, 20' from sorted ints (at most 8 runs, then '...')."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i - runs[-1][1] == 1:
            runs[-1][1] = i
        else:
            runs.append([int(i), int(i)])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:8]) + (", ..." if len(runs) > 8 else "")


def _span(idx: np.ndarray) -> str | list[int]:
    """'A:B' for a contiguous ascending range, else the list."""
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return f"{int(idx[0])}:{int(idx[0]) + len(idx)}"
    return [int(i) for i in idx]


def _evenly(count: int, k: int) -> np.ndarray:
    """Up to k evenly spaced positions in range(count) (all when k == 0 or k >= count)."""
    if k == 0 or k >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, k).round().astype(int))


# ----------------------------------------------------------------------------- frame sources

def store_frames(f: h5py.File) -> Any:
    """An open store's frames, lossless or JPEG: len(), .height, .width, .attrs, [int] ->
    (H, W, 3) and [slice | int array] -> (n, H, W, 3) uint8 RGB."""
    return store.FrameReader(f)


@dataclass
class Source:
    """Frames of a store, a video or an image directory, with what is known about them."""

    path: Path
    kind: str  # "store" | "video" | "images"
    n: int
    height: int
    width: int
    fps: float | None
    landmarks: np.ndarray | None = None  # (n, 478, 3) crop pixels, NaN where invalid (stores)
    valid: np.ndarray | None = None  # (n,) bool
    reference_frames: np.ndarray | None = None  # a generated store's /frames attribute
    files: list[Path] = field(default_factory=list)
    _array: Any = None

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the frames at ``indices`` (in that order), (H, W, 3) uint8 RGB."""
        indices = np.asarray(indices, int)
        if self.kind == "store":
            for i in indices:
                yield np.asarray(self._array[int(i)])
        elif self.kind == "images":
            for i in indices:
                yield _read_image(self.files[int(i)], (self.height, self.width))
        else:
            wanted = set(int(i) for i in indices)
            ascending = bool(np.all(np.diff(indices) > 0))
            last = int(indices.max()) if len(indices) else -1
            cache: dict[int, np.ndarray] = {}
            decoded = read_frames(self.path, max_frames=last + 1)
            k = -1
            try:
                for k, frame in enumerate(decoded):
                    if k in wanted:
                        if ascending:
                            yield frame
                        else:
                            cache[k] = frame
                    if k >= last:
                        break
            finally:
                decoded.close()
            if ascending and len(indices) and k < last:
                raise MinerfError(f"{self.path}: only {k + 1} frames could be decoded, frame {last} was asked for")
            for i in ([] if ascending else indices):
                if int(i) not in cache:
                    raise MinerfError(f"{self.path}: frame {int(i)} could not be decoded")
                yield cache[int(i)]


def _read_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MinerfError(f"{path}: cannot read image")
    if size is not None and img.shape[:2] != size:
        raise MinerfError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, the other frames are {size[1]}x{size[0]}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@contextlib.contextmanager
def open_source(path: Path, what: str) -> Iterator[Source]:
    """Open generated or reference frames: a directory of images, a minerf store (HDF5) or a video."""
    path = Path(path)
    if not path.exists():
        raise MinerfError(f"{path}: {what} not found")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise MinerfError(f"{path}: {what} directory has no PNG or JPEG frames")
        first = _read_image(files[0])
        yield Source(path, "images", len(files), first.shape[0], first.shape[1], None, files=files)
        return
    if h5py.is_hdf5(path):
        with store.open_store(path, require=("frames",)) as f:
            arr = store_frames(f)
            src = Source(path, "store", len(arr), arr.height, arr.width, float(arr.attrs.get("fps", 0.0)) or None,
                         _array=arr)
            if "reference_frames" in arr.attrs:
                src.reference_frames = np.asarray(arr.attrs["reference_frames"], np.int64).reshape(-1)
            if "landmarks" in f:
                src.landmarks = f["landmarks/points"][...]
                src.valid = f["landmarks/valid"][...].astype(bool)
            yield src
        return
    info = probe(path)  # one-line MinerfError for empty, corrupt or video-less files
    import imageio_ffmpeg  # noqa: PLC0415

    try:
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError) as exc:
        raise MinerfError(f"{path}: cannot count the video's frames ({str(exc).strip()[:160]})") from None
    if n <= 0:
        raise MinerfError(f"{path}: {what} video has no frames")
    yield Source(path, "video", int(n), info.height, info.width, info.fps)


# ----------------------------------------------------------------------------- helpers

class _Mesh:
    """mediapipe's face mesh (tracking mode) over a sequence of frames, stderr kept quiet."""

    def __init__(self) -> None:
        from .faces import FaceMesh, quiet_native_stderr  # noqa: PLC0415

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(quiet_native_stderr(enabled=not state["debug"]))
        self.mesh = self._stack.enter_context(FaceMesh())

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        return self.mesh(rgb)

    def __enter__(self) -> "_Mesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def reference_landmarks(ref: Source, indices: np.ndarray) -> np.ndarray:
    """(k, 478, 3) landmarks of the reference frames at ``indices``, NaN where no face: from
    the store's /landmarks, else from the face mesh run on those frames."""
    out = np.full((len(indices), 478, 3), np.nan, np.float32)
    if ref.landmarks is not None:
        ok = ref.valid[indices]
        out[ok] = ref.landmarks[indices[ok]]
        return out
    with _Mesh() as mesh, progress_bar("reference faces", len(indices)) as bar:
        task = bar.add_task("reference faces", total=len(indices), info=ref.path.name)
        for k, frame in enumerate(ref.frames(indices)):
            pts = mesh(frame)
            if pts is not None:
                out[k] = pts
            bar.advance(task)
    return out


def _valid(lm: np.ndarray) -> np.ndarray:
    return np.isfinite(lm[..., :2]).all(axis=(-1, -2))


def crop_boxes(landmarks: np.ndarray, size: tuple[int, int], scale: float, what: str) -> np.ndarray:
    """(k, 478, 3) landmarks -> (k, 4) face boxes; frames without landmarks take the box of
    the nearest frame with landmarks."""
    ok = _valid(landmarks)
    if not ok.any():
        raise MinerfError(f"{what}: no face landmarks on any of the reference frames used; cannot place the face crop")
    idx = np.flatnonzero(ok)
    boxes = np.zeros((len(landmarks), 4), np.int64)
    for k in idx:
        boxes[k] = metrics.face_box(landmarks[k], size, scale)
    return boxes[metrics.nearest_valid(ok)]


def _lpips_net(opts: EvalOptions) -> Any:
    if opts.lpips_weights is None:
        return None
    from .devices import resolve_device  # noqa: PLC0415 - torch only when LPIPS is asked for

    return metrics.load_lpips(opts.lpips_weights, opts.lpips_lin, resolve_device(opts.device))


def _round(x: Any) -> Any:
    """Floats to 6 significant digits (nan/inf -> None, JSON null)."""
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.{SIGNIFICANT}g}")
    return x


def _mean(values: list[float]) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    return float(v.mean()) if len(v) else float("nan")


# ----------------------------------------------------------------------------- Exp-Diff

@dataclass
class Driving:
    path: Path
    expression: np.ndarray  # (N, E)
    usable: np.ndarray  # (N,) frames with a tracked face
    focal: float
    width: int
    fps: float
    names: list[str]


def open_driving(path: Path) -> Driving:
    with store.open_store(path, require=("frames", "tracking")) as f:
        t = f["tracking"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in t.attrs.get("expression_names", [])]
        return Driving(
            path=Path(path), expression=t["expression"][...].astype(np.float64),
            usable=np.isfinite(t["fit_error"][...]), focal=float(t["intrinsics"][0, 0]),
            width=store_frames(f).width, fps=float(f["frames"].attrs["fps"]), names=names,
        )


def exp_diff(landmarks: np.ndarray, size: int, drv: Driving, drv_idx: np.ndarray, fps: float | None) -> dict:
    """Track the generated frames' landmarks (n, 478, 3) with our fitter (focal from the driving
    store, scaled to ``size``) and compare the blendshapes with the driving ones at ``drv_idx``."""
    from .facemodel import MOUTH_SET, load_face_model  # noqa: PLC0415
    from .tracking import FitConfig, fit  # noqa: PLC0415

    valid = _valid(landmarks)
    if not valid.any():
        return {"exp_diff": "skipped: no face in the generated frames", "exp_diff_frames": 0}
    model = load_face_model()
    if drv.names and list(drv.names) != list(model.expression_names):
        raise FormatError(f"{drv.path}: /tracking has other expression names than this minerf's face model")
    focal = drv.focal * size / drv.width
    result = fit(landmarks, valid, size, fps or drv.fps, FitConfig(focal=focal), model=model)
    ours = result.expression.astype(np.float64)
    theirs = drv.expression[drv_idx]
    use = valid & drv.usable[drv_idx]
    if not use.any():
        return {"exp_diff": "skipped: no frame with a face in both", "exp_diff_frames": 0}
    sq = (ours[use] - theirs[use]) ** 2
    mouth = [model.expression_index(nm) for nm in MOUTH_SET]
    return {"exp_diff": float(sq.mean()), "exp_diff_mouth": float(sq[:, mouth].mean()),
            "exp_diff_frames": int(use.sum())}


# ----------------------------------------------------------------------------- one input

def evaluate_one(generated: Path, reference: Path, opts: EvalOptions, identity: metrics.FaceIdentity,
                 lpips_net: Any = None, lip: "LipModels | None" = None) -> dict:
    """Metrics of one generated input against the reference; returns the JSON-able summary."""
    t0 = time.perf_counter()
    generated, reference = Path(generated), Path(reference)
    with open_source(generated, "generated input") as gen, open_source(reference, "reference") as ref:
        n = gen.n
        paired = not opts.identity_only
        # --- which reference frames
        if opts.identity_only:
            ref_idx = parse_range(opts.ref_frames, ref.n) if opts.ref_frames else np.arange(ref.n)
            source_of_pairing = "--ref-frames" if opts.ref_frames else "all reference frames"
        elif opts.ref_frames:
            ref_idx = parse_range(opts.ref_frames, ref.n)
            source_of_pairing = "--ref-frames"
            if len(ref_idx) != n:
                raise UsageError(f"{generated}: {n} generated frames, but --ref-frames {opts.ref_frames} names "
                                 f"{len(ref_idx)} reference frames")
        elif gen.reference_frames is not None:
            ref_idx = gen.reference_frames
            source_of_pairing = "the reference_frames attribute"
            if len(ref_idx) != n:
                raise FormatError(f"{generated}: /frames has {n} frames but its reference_frames attribute "
                                  f"{len(ref_idx)} indices")
        else:
            ref_idx = np.arange(n)
            source_of_pairing = "frames 0..n-1"
            if n > ref.n:
                raise UsageError(f"{generated}: {n} generated frames, but the reference {reference} has only "
                                 f"{ref.n}; pick the reference frames with --ref-frames A:B, or use "
                                 f"--identity-only when there is no frame-wise ground truth")
        if len(ref_idx) and (ref_idx.min() < 0 or ref_idx.max() >= ref.n):
            raise UsageError(f"{reference}: reference frames {_span(ref_idx)} ({source_of_pairing}) are out of "
                             f"range: it has {ref.n} frames")
        if paired and (gen.height, gen.width) != (ref.height, ref.width):
            raise MinerfError(f"{generated}: frames are {gen.width}x{gen.height}, the reference {reference} has "
                              f"{ref.width}x{ref.height}; paired metrics need the same size (or use --identity-only)")
        # --- driving frames for Exp-Diff
        drv = drv_idx = None
        if opts.driving is not None:
            drv = open_driving(opts.driving)
            n_drv = len(drv.expression)
            if opts.driving_frames:
                drv_idx = parse_range(opts.driving_frames, n_drv, "--driving-frames")
            elif paired and _same_file(opts.driving, reference):
                drv_idx = ref_idx
            else:
                drv_idx = np.arange(n)
            if len(drv_idx) != n:
                raise UsageError(f"{generated}: {n} generated frames, but the driving frames {_span(drv_idx)} of "
                                 f"{opts.driving} are {len(drv_idx)}")
            if drv_idx.max() >= n_drv:
                raise UsageError(f"{opts.driving}: has {n_drv} frames; driving frames {_span(drv_idx)} are out of "
                                 f"range (pick them with --driving-frames A:B)")
            if gen.height != gen.width:
                raise MinerfError(f"{generated}: Exp-Diff needs square frames (the tracker's crop), got "
                                  f"{gen.width}x{gen.height}")

        # --- reference: face crops (paired) and the identity centroid
        cen_pos = _evenly(len(ref_idx), IDENTITY_REFERENCE_FRAMES)
        lm_idx = ref_idx if paired else ref_idx[cen_pos]
        ref_lm = reference_landmarks(ref, lm_idx)
        boxes = crop_boxes(ref_lm, (ref.height, ref.width), opts.crop_scale, str(reference)) if paired else None
        cen_lm = ref_lm[cen_pos] if paired else ref_lm
        ref_desc = []
        for k, frame in enumerate(ref.frames(ref_idx[cen_pos])):
            if _valid(cen_lm[k]):
                d = identity.descriptor(frame, metrics.dlib_box_from_landmarks(cen_lm[k]))
                if d is not None:
                    ref_desc.append(d)
        if not ref_desc:
            raise MinerfError(f"{reference}: no face found on the reference frames used for the identity")

        # --- the main loop over the generated frames
        id_pos = set(_evenly(n, opts.identity_frames).tolist())
        gen_lm = np.full((n, 478, 3), np.nan, np.float32)
        per = {k: [] for k in ("psnr", "ssim", "lpips", "cpbd", "cpbd_reference", "side")}
        gen_desc = []
        done = 0
        ref_iter = ref.frames(ref_idx) if paired else None
        with _Mesh() as mesh, progress_bar("evaluate", n) as bar:
            task = bar.add_task("evaluate", total=n, info=generated.name)
            for k, g in enumerate(gen.frames(np.arange(n))):
                pts = mesh(g)
                if pts is not None:
                    gen_lm[k] = pts
                if paired:
                    r = next(ref_iter)
                    box = boxes[k]
                    gc, rc = metrics.crop(g, box), metrics.crop(r, box)
                    per["psnr"].append(min(metrics.psnr(gc, rc), metrics.PSNR_CAP))
                    per["ssim"].append(metrics.ssim(gc, rc))
                    per["cpbd"].append(metrics.cpbd(gc))
                    per["cpbd_reference"].append(metrics.cpbd(rc))
                    per["side"].append(float(box[2] - box[0]))
                    if lpips_net is not None:
                        per["lpips"].append(metrics.lpips(lpips_net, gc, rc))
                elif pts is not None:
                    box = metrics.face_box(pts, (gen.height, gen.width), opts.crop_scale)
                    per["cpbd"].append(metrics.cpbd(metrics.crop(g, box)))
                    per["side"].append(float(box[2] - box[0]))
                if k in id_pos and pts is not None:
                    d = identity.descriptor(g, metrics.dlib_box_from_landmarks(pts))
                    if d is not None:
                        gen_desc.append(d)
                bar.advance(task)
                done = k + 1
            if paired:
                ref_iter.close()
        if done != n:
            raise MinerfError(f"{generated}: only {done} of its {n} frames could be read")
        found = _valid(gen_lm)
        lip_out = lip_metrics(gen, gen_lm, ref_lm if paired else None, lip or LipModels(), opts)

    # --- summary
    out: dict = {
        "generated": str(generated), "kind": gen.kind, "reference": str(reference),
        "mode": "identity-only" if opts.identity_only else "paired",
        "frames": n, "size": [gen.width, gen.height],
        "reference_frames": _span(ref_idx), "pairing": source_of_pairing if paired else None,
        "face_crop_scale": opts.crop_scale,
        "face_crop_mean_side_px": _mean(per["side"]),
    }
    if paired:
        out.update(psnr=_mean(per["psnr"]), ssim=_mean(per["ssim"]))
        out["lpips"] = _mean(per["lpips"]) if lpips_net is not None else "skipped: no weights (--lpips-weights, --lpips-lin)"
    else:
        skip = "skipped: --identity-only (no frame-wise ground truth)"
        out.update(psnr=skip, ssim=skip, lpips=skip)
    out["cpbd"] = _mean(per["cpbd"])
    if paired:
        out["cpbd_reference"] = _mean(per["cpbd_reference"])
    scores = metrics.identity_scores(np.array(gen_desc).reshape(-1, 128), np.array(ref_desc))
    out.update(scores)
    out["identity_frames"] = len(gen_desc)
    out["identity_reference_frames"] = len(ref_desc)
    out["identity_descriptor"] = "dlib ResNet v1 (128-d); same person below face_distance 0.6"
    out["frames_without_face"] = int((~found).sum())
    out["frames_without_face_list"] = _ranges(np.flatnonzero(~found).tolist())
    out["face_found_fraction"] = float(found.mean()) if n else float("nan")
    if drv is not None:
        out["driving"] = str(opts.driving)
        out["driving_frames"] = _span(drv_idx)
        out.update(exp_diff(gen_lm, gen.width, drv, drv_idx, gen.fps))
    else:
        out["exp_diff"] = "skipped: no --driving store"
    if opts.identity_only:
        out["m_lmd"] = "skipped: --identity-only (no frame-wise reference mouth)"
    out.update(lip_out)
    out["seconds"] = time.perf_counter() - t0
    return {k: _round(v) for k, v in out.items()}


# ----------------------------------------------------------------------------- lip metrics

@dataclass
class LipModels:
    """What the lip metrics need, loaded once for all generated inputs."""

    audio: np.ndarray | None = None  # --audio, 16 kHz mono float32
    audio_path: Path | None = None
    bundle: Any = None  # AudioBundle (--audio-model)
    syncnet: Any = None  # SyncNet from --syncnet


def load_lip_models(opts: EvalOptions) -> LipModels:
    """Load --audio, --audio-model and --syncnet (one-line errors for missing or bad files)."""
    lip = LipModels()
    if opts.audio is not None:
        from .audio import load_audio  # noqa: PLC0415

        lip.audio = load_audio(Path(opts.audio)).pcm
        lip.audio_path = Path(opts.audio)
    if opts.audio_model is not None or opts.syncnet is not None:
        from .devices import resolve_device  # noqa: PLC0415 - torch only when asked for

        device = resolve_device(opts.device)
        if opts.syncnet is not None:
            from .syncnet import load_syncnet  # noqa: PLC0415

            lip.syncnet = load_syncnet(Path(opts.syncnet), device)
        if opts.audio_model is not None:
            path = Path(opts.audio_model)
            if not path.exists():
                raise MinerfError(f"{path}: audio model (--audio-model) not found")
            from .audio_model.bundle import AudioBundle  # noqa: PLC0415

            lip.bundle = AudioBundle.load(path, device)
    return lip


def own_audio(gen: Source) -> tuple[np.ndarray | None, str | None]:
    """The generated input's own audio (a store's /audio, a video's audio track) at 16 kHz."""
    if gen.kind == "store":
        with h5py.File(gen.path, "r") as f:
            if "audio/pcm" not in f:
                return None, None
            pcm = f["audio/pcm"][...].astype(np.float32)
            rate = int(f["audio"].attrs.get("sample_rate", 16000))
        if rate != 16000:
            from .audio import resample  # noqa: PLC0415

            pcm = resample(pcm, rate, 16000)
        return pcm, f"{gen.path}:/audio"
    if gen.kind == "video":
        from .audio import load_audio  # noqa: PLC0415

        try:
            return load_audio(gen.path).pcm, f"{gen.path} (its audio track)"
        except MinerfError:
            return None, None
    return None, None


def lip_metrics(gen: Source, gen_lm: np.ndarray, ref_lm: np.ndarray | None, lip: LipModels,
                opts: EvalOptions) -> dict:
    """M-LMD, our sync score and LSE-D/LSE-C of one generated input (JSON-able; 'skipped: ...'
    strings where a metric cannot be computed). ``gen`` must still be open (LSE reads its frames)."""
    from . import lipmetrics  # noqa: PLC0415

    out: dict = {}
    if ref_lm is not None:
        r = lipmetrics.mouth_lmd(gen_lm, ref_lm)
        if r.frames:
            out.update(m_lmd=r.value, m_lmd_px=r.value_px)
        else:
            out["m_lmd"] = "skipped: no frame with a face in both the generated and the reference frame"
        out.update(m_lmd_frames=r.frames, m_lmd_frames_skipped=r.skipped, m_lmd_normaliser=lipmetrics.NORMALISER)
    # --- the audio
    if lip.audio is not None:
        pcm, audio_from = lip.audio, str(lip.audio_path)
    else:
        pcm, audio_from = own_audio(gen)
    want_audio = lip.bundle is not None or lip.syncnet is not None
    if want_audio:
        out["audio"] = audio_from if pcm is not None else None
    no_audio = "skipped: no audio (give --audio SPEECH; the generated input has no audio of its own)"
    fps = gen.fps or FALLBACK_FPS
    # --- our contrastive sync model
    if lip.bundle is None:
        out["minerf_sync_confidence"] = "skipped: no minerf audio model (--audio-model)"
    elif pcm is None:
        out["minerf_sync_confidence"] = no_audio
    elif not _valid(gen_lm).any():
        out["minerf_sync_confidence"] = "skipped: no face in the generated frames"
    else:
        try:
            res = lip.bundle.sync(pcm, fps, gen_lm, max_offset=15)
        except MinerfError as exc:
            out["minerf_sync_confidence"] = f"skipped: {exc}"
    if "minerf_sync_confidence" not in out:
        out["minerf_sync_offset_frames"] = int(res["offset"])
        out["minerf_sync_confidence"] = float(res["confidence"])
        out["minerf_sync_model"] = str(opts.audio_model)
        out["minerf_sync_note"] = ("minerf's own contrastive audio/mouth model (SyncNet-style offset and "
                                   "confidence, not SyncNet's LSE); offset > 0: the video lags the audio")
    # --- SyncNet
    if lip.syncnet is None:
        out["lse_d"] = out["lse_c"] = "skipped: no SyncNet weights (--syncnet)"
    elif pcm is None:
        out["lse_d"] = out["lse_c"] = no_audio
    elif abs(fps - 25.0) > 0.01:
        out["lse_d"] = out["lse_c"] = f"skipped: SyncNet needs 25 fps video (the generated frames are {fps:g} fps)"
    elif not _valid(gen_lm).any():
        out["lse_d"] = out["lse_c"] = "skipped: no face in the generated frames"
    else:
        from . import syncnet  # noqa: PLC0415

        crops = np.stack(list(syncnet.face_crops(gen.frames(np.arange(gen.n)), gen_lm)))
        try:
            res = syncnet.lse(lip.syncnet, crops, pcm)
        except MinerfError as exc:
            out["lse_d"] = out["lse_c"] = f"skipped: {exc}"
        else:
            out.update(lse_d=res.lse_d, lse_c=res.lse_c, lse_offset_frames=res.offset, lse_windows=res.windows,
                       lse_weights=f"user-supplied SyncNet weights: {opts.syncnet}")
    if want_audio and gen.fps is None:
        out["audio_fps_assumed"] = FALLBACK_FPS
    return out


FALLBACK_FPS = 25.0  # frame rate of an image directory (no fps of its own) for the audio metrics


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or Path(a).samefile(b)
    except OSError:
        return False


# ----------------------------------------------------------------------------- the stage

def evaluate(generated: Sequence[Path], reference: Path, opts: EvalOptions) -> dict:
    """Evaluate every generated input against ``reference``; the JSON summary (one input: its
    metrics; several: {"inputs": [...], "mean": {...}})."""
    opts.check()
    if not generated:
        raise UsageError("no generated input given")
    t0 = time.perf_counter()
    lpips_net = _lpips_net(opts)
    lip = load_lip_models(opts)
    identity = metrics.FaceIdentity()
    results = [evaluate_one(Path(g), Path(reference), opts, identity, lpips_net, lip) for g in generated]
    print_table(results)
    if len(results) == 1:
        return results[0]
    mean = {}
    for key in MEAN_KEYS:
        vals = [r[key] for r in results if isinstance(r.get(key), (int, float))]
        if vals:
            mean[key] = _round(float(np.mean(vals)))
    return {"reference": str(reference), "count": len(results), "inputs": results, "mean": mean,
            "seconds": _round(time.perf_counter() - t0)}


TABLE_ROWS = (("psnr", "PSNR dB", 2), ("ssim", "SSIM", 4), ("lpips", "LPIPS", 4), ("cpbd", "CPBD", 3),
              ("cpbd_reference", "CPBD ref", 3), ("csim", "CSIM", 4), ("acd", "ACD", 4),
              ("face_distance", "face dist", 3), ("exp_diff", "Exp-Diff", 5), ("m_lmd", "M-LMD", 4),
              ("minerf_sync_confidence", "sync conf", 3), ("minerf_sync_offset_frames", "sync offset", 0),
              ("lse_d", "LSE-D", 3), ("lse_c", "LSE-C", 3), ("frames_without_face", "no face", 0))


def print_table(results: list[dict]) -> None:
    """A rich table of the metrics on stderr (not under --quiet)."""
    if state["quiet"]:
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="minerf evaluate", title_justify="left")
    table.add_column("metric")
    for r in results:
        table.add_column(Path(r["generated"]).name, justify="right")
    if len(results) > 1:
        table.add_column("mean", justify="right")
    for key, label, digits in TABLE_ROWS:
        cells = []
        for r in results:
            v = r.get(key)
            cells.append("-" if v is None else (f"{v:.{digits}f}" if isinstance(v, (int, float)) else "skipped"))
        if len(results) > 1:
            vals = [r[key] for r in results if isinstance(r.get(key), (int, float))]
            cells.append(f"{np.mean(vals):.{digits}f}" if vals else "-")
        if any(c not in ("-", "skipped") for c in cells):
            table.add_row(label, *cells)
    stderr_console().print(table)
