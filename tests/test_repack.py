"""JPEG frames end to end: `minerf prep --jpeg-quality` and `minerf repack` on a tiny prepped clip."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import metrics, store
from minerf_cli.app import app
from minerf_cli.repack import PER_FRAME

runner = CliRunner()
FRAMES = 8  # frames prepped from the synthetic clip
SIZE = 128


def _mediapipe_ok() -> bool:
    try:
        import mediapipe as mp
    except ImportError:
        return False
    return hasattr(mp, "solutions")


pytestmark = pytest.mark.skipif(not _mediapipe_ok(), reason="mediapipe 0.10.21 is not installed")


def invoke(*args):
    return runner.invoke(app, [*map(str, args)])


def _prep(video, out, *extra):
    res = invoke("-q", "prep", video, "-o", out, "--size", SIZE, "--max-frames", FRAMES, *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def stores(synth_clip, tmp_path_factory):
    """A lossless prepped + tracked store, and the same clip prepped with --jpeg-quality 95."""
    d = tmp_path_factory.mktemp("repack")
    lossless, jpeg = d / "lossless.h5", d / "jpeg.h5"
    _prep(synth_clip["video"], lossless)
    res = invoke("-q", "fit3dmm", lossless)
    assert res.exit_code == 0, res.output
    summary = _prep(synth_clip["video"], jpeg, "--jpeg-quality", 95)
    return {"lossless": lossless, "jpeg": jpeg, "jpeg_summary": summary}


def frames_of(path):
    with store.open_store(path) as f:
        r = store.FrameReader(f)
        return r.codec, r[:]


def mean_psnr(a, b):
    return float(np.mean([metrics.psnr(x, y) for x, y in zip(a, b)]))


def test_prep_jpeg_quality(stores):
    s = stores["jpeg_summary"]
    assert s["frames_codec"] == "jpeg" and s["jpeg_quality"] == 95 and s["frames"] == FRAMES
    codec, jpeg = frames_of(stores["jpeg"])
    _, exact = frames_of(stores["lossless"])
    assert codec == "jpeg" and jpeg.shape == exact.shape == (FRAMES, SIZE, SIZE, 3)
    assert mean_psnr(jpeg, exact) > 35
    with h5py.File(stores["jpeg"]) as fj, h5py.File(stores["lossless"]) as fl:
        assert fj["frames"].attrs["quality"] == 95 and fj["frames"].attrs["chroma_subsampling"] in ("4:4:4", "4:2:0")
        assert int(fj.attrs["version"]) == 2
        # everything else is computed from the decoded frames, before encoding: the same
        np.testing.assert_array_equal(fj["masks/head"][()], fl["masks/head"][()])
        np.testing.assert_array_equal(fj["landmarks/points"][()], fl["landmarks/points"][()])
        for key in ("fps", "crop_box", "source_size", "start_time"):
            np.testing.assert_array_equal(fj["frames"].attrs[key], fl["frames"].attrs[key])


def test_prep_rejects_a_bad_quality(synth_clip, tmp_path):
    res = invoke("prep", synth_clip["video"], "-o", tmp_path / "x.h5", "--jpeg-quality", "0")
    assert res.exit_code == 2 and "--jpeg-quality" in res.output
    assert not list(tmp_path.iterdir())


def test_repack_max_frames_cuts_every_per_frame_node(stores, tmp_path):
    src, out = stores["lossless"], tmp_path / "cut.h5"
    res = invoke("repack", src, "-o", out, "--max-frames", 3, "--jpeg-quality", 90)
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["output"] == str(out) and s["frames"] == 3 and s["frames_in"] == FRAMES
    assert s["codec"] == "jpeg" and s["jpeg_quality"] == 90 and s["reencoded"] and s["codec_in"] == "lossless"
    assert s["bytes_in"] == src.stat().st_size and s["bytes_out"] == out.stat().st_size
    assert s["bytes_out"] < s["bytes_in"]
    _, exact = frames_of(src)
    codec, got = frames_of(out)
    assert codec == "jpeg" and got.shape == (3, SIZE, SIZE, 3)
    assert s["psnr_db"] == pytest.approx(mean_psnr(got, exact[:3]), abs=1e-3) and s["psnr_db"] > 30
    assert s["psnr_min_db"] <= s["psnr_db"] and s["identical_frames"] == 0
    with h5py.File(src) as fi, h5py.File(out) as fo:
        per_frame = []
        fo.visititems(lambda name, obj: per_frame.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in per_frame:
            if name in PER_FRAME:
                assert len(fo[name]) == 3, name
                if name != "frames":
                    np.testing.assert_array_equal(fo[name][()], fi[name][:3])
            elif name == "audio/pcm":
                rate, fps = fi["audio"].attrs["sample_rate"], fi["frames"].attrs["fps"]
                assert len(fo[name]) == round(3 * rate / fps) == s["audio_samples"]
                np.testing.assert_array_equal(fo[name][()], fi[name][:len(fo[name])])
            else:  # not per-frame: unchanged
                np.testing.assert_array_equal(fo[name][()], fi[name][()])
        assert {"landmarks/points", "landmarks/valid", "masks/head", "masks/person", "tracking/camera_from_head",
                "tracking/expression", "tracking/fit_error", "tracking/identity", "background"} <= set(per_frame)
        assert sorted(s["cut"]) == sorted(["/frames", "/audio/pcm"] + [f"/{n}" for n in per_frame if n in PER_FRAME
                                                                       and n != "frames"])
        # attributes copied; the root says version 2 and where the copy comes from
        assert list(fo["tracking"].attrs["expression_names"]) == list(fi["tracking"].attrs["expression_names"])
        assert fo["masks"].attrs["person_threshold"] == fi["masks"].attrs["person_threshold"]
        assert fo.attrs["source_sha256"] == fi.attrs["source_sha256"] and int(fo.attrs["version"]) == 2
        assert fo.attrs["repacked_from"] == str(src.resolve())
        assert fo["frames"].attrs["created_by"].endswith("repack")
        for key in ("fps", "crop_box", "source_size", "source_fps", "start_time"):
            np.testing.assert_array_equal(fo["frames"].attrs[key], fi["frames"].attrs[key])
    info = invoke("info", out)
    assert info.exit_code == 0 and json.loads(info.stdout)["nodes"]["frames"]["shape"] == [3, SIZE, SIZE, 3]
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_repack_without_cut_and_back_to_lossless(stores, tmp_path):
    q90, back = tmp_path / "q90.h5", tmp_path / "back.h5"
    s = json.loads(invoke("-q", "repack", stores["lossless"], "-o", q90).stdout)  # JPEG 90 by default
    assert s["frames"] == FRAMES and s["jpeg_quality"] == 90 and s["cut"] == [] and s["audio_samples"]
    res = invoke("-q", "repack", q90, "-o", back, "--lossless")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["codec"] == "lossless" and s["psnr_db"] is None and s["identical_frames"] == FRAMES
    _, jpeg = frames_of(q90)
    codec, exact = frames_of(back)
    assert codec == "lossless"
    np.testing.assert_array_equal(exact, jpeg)  # the decoded JPEG frames, kept exactly
    # the requested encoding already: the frames are copied, not re-encoded
    same = tmp_path / "same.h5"
    s = json.loads(invoke("-q", "repack", q90, "-o", same, "--jpeg-quality", 90, "--max-frames", 2).stdout)
    assert not s["reencoded"] and s["frames"] == 2
    with h5py.File(q90) as a, h5py.File(same) as b:
        assert bytes(a["frames"][1]) == bytes(b["frames"][1])
    # a JPEG store is a store like any other: fit3dmm runs on it
    assert invoke("-q", "fit3dmm", q90, "--force").exit_code == 0


def test_repack_force_and_errors(stores, tmp_path):
    src, out = stores["jpeg"], tmp_path / "out.h5"
    assert invoke("-q", "repack", src, "-o", out, "--max-frames", 2).exit_code == 0
    before = out.read_bytes()
    res = invoke("repack", src, "-o", out, "--max-frames", 4)
    assert res.exit_code == 2 and "--force" in res.output and out.read_bytes() == before
    res = invoke("-q", "repack", src, "-o", out, "--max-frames", 4, "--force")
    assert res.exit_code == 0 and json.loads(res.stdout)["frames"] == 4
    copy = tmp_path / "copy.h5"
    shutil.copy(src, copy)
    res = invoke("repack", copy, "-o", copy, "--force")  # never onto its input
    assert res.exit_code == 2 and copy.read_bytes() == src.read_bytes()
    for bad in (["--jpeg-quality", "0"], ["--jpeg-quality", "101"], ["--max-frames", "0"],
                ["--lossless", "--jpeg-quality", "80"]):
        res = invoke("repack", src, "-o", tmp_path / "bad.h5", *bad)
        assert res.exit_code == 2, bad
    assert invoke("repack", tmp_path / "missing.h5", "-o", tmp_path / "m.h5").exit_code == 1
    junk = tmp_path / "junk.h5"
    with h5py.File(junk, "w") as f:
        f.create_dataset("x", data=[1])
    res = invoke("repack", junk, "-o", tmp_path / "j.h5")
    assert res.exit_code == 3 and res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.h5", "junk.h5", "out.h5"]
