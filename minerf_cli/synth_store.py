"""Synthetic talking heads written straight into frame stores with ground-truth tracking.

The store path (:func:`synthesize_store`, :func:`synthesize_stores`, ``minerf synth --store``)
skips the video, ``prep`` and ``fit3dmm``: it renders straight into a ready-to-train frame
store (minerf_cli.store) whose landmarks, masks, background and tracking are the ground
truth. It needs only numpy, scipy, OpenCV and h5py (no ffmpeg, mediapipe or soundfile):

    /frames      the rendered frames (lossless, or JPEG with jpeg_quality); crop_box = [0, 0, size]
    /audio       the synthetic speech, 16 kHz mono float32, exactly N / fps seconds
    /landmarks   the 468 mesh landmarks: the tracker's own landmark model (tracking.landmark_basis:
                 the ICT surface points of the mediapipe correspondence plus its learnt offsets)
                 posed with the true identity, expression and camera and projected; the 10 iris
                 points at the rendered irises; z = depth relative to the face, in pixels
    /masks       person = the rendered head mesh and torso; head = prep's definition
                 (masks.head_mask) applied to those landmarks and that person mask: the face
                 hull plus the rendered head (hair, ears) above the jaw line, not the neck
    /background  the rendered backdrop with the static torso, without the head
    /tracking    the true intrinsics, camera_from_head, expression (53, model order), identity;
                 fit_error 0 (attr ground_truth = 1)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UsageError
from .fsutil import check_output
from .synth import _look_json, clip_plan, identity_seeds, rotation_ypr
from .synth_head import HeadRenderer, camera_from_head

STORE_COMMAND = "synth"
IRIS_RADIUS_CM = 0.58  # the rendered iris (synth_head.HeadRenderer._eye_albedo)
# mediapipe's iris points: 468-472 the subject's right eye (centre, then image right, top,
# image left, bottom), 473-477 the left one
IRIS_FIRST = {"eye_R": 468, "eye_L": 473}


def cameras(plan: dict, renderer: HeadRenderer) -> np.ndarray:
    """(N, 4, 4) float64 camera_from_head of every frame of a clip plan."""
    return np.stack([camera_from_head(rotation_ypr(*plan["ypr"][k]), plan["delta"][k], renderer.t_cam)
                     for k in range(plan["n"])])


def ground_truth_landmarks(renderer: HeadRenderer, expression: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """(N, 478, 3) float32 landmarks in mediapipe order and pixels: x right, y down, z depth.

    Points 0-467: the tracker's landmark model (tracking.landmark_basis, i.e. the ICT surface
    point of each mediapipe landmark plus the correspondence's learnt offsets) for the true
    identity and expression, posed by cams (N, 4, 4) and projected with renderer.K, so
    fit3dmm's model reproduces them exactly. Points 468-477: the rendered irises (centre
    and four points on the iris circle). z: camera depth minus the mesh landmarks' mean
    depth, scaled to pixels at that depth (f / z), like mediapipe's (smaller = nearer).
    """
    from .tracking import landmark_basis, load_correspondence  # noqa: PLC0415

    m, corr = renderer.m, load_correspondence()
    mean, id_basis, ex_basis = landmark_basis(m, corr)
    base = mean + np.tensordot(np.asarray(renderer.look.identity, np.float64), id_basis, axes=(0, 0))
    ex = np.asarray(expression, np.float64)
    head = base[None] + np.tensordot(ex, ex_basis, axes=(1, 0))  # (N, L, 3)
    n = len(ex)
    pts_head = np.zeros((n, 478, 3))
    pts_head[:, corr.landmark] = head
    # irises: the centre vertex of each eye fill (the last of its rings), as rendered
    first = len(renderer.v_id)
    top = renderer.top
    for fill in top.fills:
        centre_row = first + fill.M.shape[0] - 1
        first += fill.M.shape[0]
        if fill.name not in IRIS_FIRST:
            continue
        k0 = IRIS_FIRST[fill.name]
        # head_vertices(e)[centre_row], linear in the used blendshapes (without the whole mesh)
        row = top.fill_M[centre_row - len(renderer.v_id)].toarray()[0]  # (V,)
        modes = renderer.modes.reshape(len(renderer.used), -1, 3)
        at_rest = row @ renderer.v_id + top.fill_offset[centre_row - len(renderer.v_id)]
        per_mode = np.stack([row @ md for md in modes])  # (U, 3)
        centres = at_rest[None] + ex[:, renderer.used] @ per_mode  # (N, 3)
        r = IRIS_RADIUS_CM
        for j, d in enumerate(([0, 0, 0], [r, 0, 0], [0, r, 0], [-r, 0, 0], [0, -r, 0])):
            pts_head[:, k0 + j] = centres + np.asarray(d, np.float64)
    cam = np.einsum("nij,nlj->nli", cams[:, :3, :3], pts_head) + cams[:, None, :3, 3]
    K = renderer.K
    z = cam[..., 2]
    out = np.empty((n, 478, 3))
    out[..., 0] = K[0, 0] * cam[..., 0] / z + K[0, 2]
    out[..., 1] = K[1, 1] * cam[..., 1] / z + K[1, 2]
    z_ref = z[:, corr.landmark].mean(1, keepdims=True)
    out[..., 2] = (z - z_ref) * K[0, 0] / z_ref
    return out.astype(np.float32)


def _person_and_head(renderer: HeadRenderer, head_cover: np.ndarray, points: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """prep's masks from the ground truth: person = rendered head mesh | torso, head =
    masks.head_mask (face hull + person above the jaw line); both 0/255 uint8."""
    from .masks import head_mask  # noqa: PLC0415 - cv2

    person = ((head_cover | renderer.torso_mask).astype(np.uint8)) * np.uint8(255)
    head = head_mask(points, person)  # also ORs the head into person
    return person, head


def synthesize_store(path: Path, identity_seed: int = 0, seconds: float = 4.0, size: int = 512,
                     fps: float = 25.0, motion_seed: int | None = None, jpeg_quality: int | None = None,
                     force: bool = False, progress: Callable[[int], None] | None = None) -> dict:
    """Render one synthetic clip straight into a ready-to-train store at ``path``.

    The store has every node ``prep`` + ``fit3dmm`` write (/frames, /audio, /landmarks,
    /masks, /background, /tracking), filled with the ground truth (see the module
    docstring); ``minerf train`` takes it as is. identity_seed / motion_seed as in
    :func:`synthesize_clip` (the same seeds give the same person, motion and audio as the
    mp4 path). Frames are lossless unless ``jpeg_quality`` (1-100) is given. progress(k)
    is called after each frame. Needs only numpy, scipy, OpenCV and h5py.

    Returns {"store", "frames", "seconds", "fps", "size", "identity_seed", "motion_seed",
    "frames_per_second"}.
    """
    from . import store  # noqa: PLC0415 - h5py
    from .chunkio import ChunkWriter, chunked_dataset  # noqa: PLC0415

    path = Path(path)
    t0 = time.perf_counter()
    if jpeg_quality is not None:
        store.check_jpeg_quality(jpeg_quality)
    check_output(path, force)
    plan = clip_plan(identity_seed, seconds, size, fps, motion_seed)
    renderer = HeadRenderer(plan["look"], plan["size"])
    m = renderer.m
    n, fps, size = plan["n"], plan["fps"], plan["size"]
    ex = plan["expression"].astype(np.float32)
    cams = cameras(plan, renderer)
    points = ground_truth_landmarks(renderer, ex, cams)
    valid = np.isfinite(points).all((1, 2))
    mseed = identity_seed if motion_seed is None else motion_seed
    source = {"synthetic": True, "synth_identity_seed": int(identity_seed), "synth_motion_seed": int(mseed),
              "synth_look": _look_json(plan["look"])}

    with store.create_store(path, STORE_COMMAND, force=force, source=source) as f:
        masks = f.create_group("masks")
        head_ds = chunked_dataset(masks, "head", (size, size), "uint8")
        person_ds = chunked_dataset(masks, "person", (size, size), "uint8")
        with ChunkWriter() as writer, \
                store.FrameWriter(f, size, size, jpeg_quality, chunk_writer=writer) as frames_out:
            for k in range(n):
                img, cover = renderer.render_with_mask(ex[k], cams[k])
                person, head = _person_and_head(renderer, cover, points[k] if valid[k] else None)
                frames_out.put(k, img)
                writer.put(head_ds, k, head)
                writer.put(person_ds, k, person)
                if progress is not None:
                    progress(k + 1)
        frames_out.trim(n)
        for ds in (head_ds, person_ds):
            ChunkWriter.trim(ds, n)
        store.stamp(masks, STORE_COMMAND)
        masks.attrs["person_threshold"] = 0.5
        masks.attrs["source"] = "rendered (ground truth)"

        frames = f["frames"]
        store.stamp(frames, STORE_COMMAND)
        frames.attrs["fps"] = fps
        frames.attrs["crop_box"] = np.array([0, 0, size], np.int64)
        frames.attrs["source_size"] = np.array([size, size], np.int64)
        frames.attrs["source_fps"] = fps
        frames.attrs["start_time"] = 0.0

        pts = np.where(valid[:, None, None], points, np.nan).astype(np.float32)
        lm = f.create_group("landmarks")
        store.stamp(lm, STORE_COMMAND)
        lm.create_dataset("points", data=pts, chunks=(min(n, 256), store.NUM_LANDMARKS, 3),
                          compression="gzip", compression_opts=1)
        lm.create_dataset("valid", data=valid)
        lm.attrs["source"] = "ground truth: the tracker's landmark model, posed and projected"

        bg = f.create_dataset("background", data=renderer.plate)
        store.stamp(bg, STORE_COMMAND)
        bg.attrs["samples"] = 0
        bg.attrs["inpainted_fraction"] = 0.0
        bg.attrs["source"] = "rendered backdrop and torso (ground truth)"

        speech = plan["speech"]
        if speech.rate != 16000:  # pragma: no cover - synth_audio.RATE
            raise ValueError(f"synthetic audio at {speech.rate} Hz, the store holds 16 kHz")
        want = int(round(n / fps * speech.rate))
        pcm = np.pad(speech.pcm, (0, max(0, want - len(speech.pcm))))[:want].astype(np.float32)
        audio = f.create_group("audio")
        store.stamp(audio, STORE_COMMAND)
        audio.attrs["sample_rate"] = speech.rate
        audio.create_dataset("pcm", data=pcm, chunks=(min(max(want, 1), 1 << 16),), compression="gzip",
                             compression_opts=1)

        g = f.create_group("tracking")
        store.stamp(g, STORE_COMMAND)
        g.create_dataset("intrinsics", data=renderer.K.astype(np.float32))
        g.create_dataset("camera_from_head", data=cams.astype(np.float32))
        g.create_dataset("expression", data=ex)
        g.create_dataset("identity", data=np.asarray(plan["look"].identity, np.float32))
        g.create_dataset("fit_error", data=np.where(valid, 0.0, np.nan).astype(np.float32))
        g.attrs["expression_names"] = np.array(m.expression_names, dtype="S")
        g.attrs["units"] = "cm"
        g.attrs["camera_convention"] = "opencv"
        g.attrs["focal_estimated"] = False
        g.attrs["ground_truth"] = True
    elapsed = time.perf_counter() - t0
    return {"store": str(path), "frames": int(n), "seconds": n / fps, "fps": fps, "size": size,
            "identity_seed": int(identity_seed), "motion_seed": int(mseed),
            "frames_per_second": round(n / max(elapsed, 1e-9), 1)}


def store_name(k: int) -> str:
    """The file name of identity k's store in :func:`synthesize_stores`'s directory."""
    return f"synth_id{k:02d}.h5"


def _store_job(kwargs: dict, queue) -> dict:
    """One :func:`synthesize_store` in a worker process; frame counts go to ``queue``."""
    try:
        import cv2  # noqa: PLC0415

        cv2.setNumThreads(1)  # one process per identity: no thread oversubscription
    except ImportError:  # pragma: no cover
        pass
    last = [0]

    def step(k: int) -> None:
        queue.put(k - last[0])
        last[0] = k

    return synthesize_store(progress=step, **kwargs)


def synthesize_stores(out_dir: Path, ids: int = 2, seconds: float = 4.0, size: int = 512, fps: float = 25.0,
                      seed: int = 0, jobs: int = 1, jpeg_quality: int | None = None, force: bool = False,
                      progress: Callable[[int], None] | None = None) -> list[dict]:
    """Render ``ids`` identities into ``out_dir``/synth_id00.h5, ... (ready-to-train stores).

    The identities are those of :func:`synthesize` with the same ``seed`` (synth_idNN.h5 is
    the person of idNN.mp4). ``jobs`` > 1 renders that many identities at once, each in its
    own process (0: one per CPU core). progress(n) is called with the total number of frames
    rendered so far. Returns the per-store dicts of :func:`synthesize_store`, in order.
    """
    if ids < 1:
        raise UsageError(f"--ids must be >= 1 (got {ids})")
    if jobs < 0:
        raise UsageError(f"--jobs must be >= 0 (got {jobs})")
    if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
        raise UsageError(f"--jpeg-quality must be in 1..100 (got {jpeg_quality})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = [dict(path=out_dir / store_name(k), identity_seed=s, seconds=seconds, size=size, fps=fps,
                 jpeg_quality=jpeg_quality, force=force) for k, s in enumerate(identity_seeds(seed, ids))]
    for w in work:  # refuse before rendering anything
        check_output(w["path"], force)
    jobs = min(jobs or os.cpu_count() or 1, ids)
    if jobs <= 1:
        out, done = [], 0
        for w in work:
            base = done

            def step(i, base=base):
                if progress is not None:
                    progress(base + i)

            out.append(synthesize_store(progress=step, **w))
            done += out[-1]["frames"]
        return out

    import multiprocessing as mp  # noqa: PLC0415
    import queue as queue_mod  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor, wait  # noqa: PLC0415

    ctx = mp.get_context("spawn")  # no fork of a parent that may hold torch / threads
    with ctx.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        q = manager.Queue()
        futures = [pool.submit(_store_job, w, q) for w in work]
        done = 0
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2)
            for fut in finished:
                if fut.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise fut.exception()
            try:
                while True:
                    done += q.get_nowait()
                    if progress is not None:
                        progress(done)
            except queue_mod.Empty:
                pass
        return [fut.result() for fut in futures]
