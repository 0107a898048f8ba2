"""The HDF5 frame store: round trip, validation and exit codes."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import metrics, store
from minerf_cli.app import app
from minerf_cli.errors import FormatError, UsageError

runner = CliRunner()


def make_store(path, n=3, size=8, with_tracking=False):
    with store.create_store(path, "test", source={"source_path": "x.mp4", "source_sha256": "0" * 64}) as f:
        ds = store.frames_dataset(f, n, size)
        ds[...] = np.arange(n * size * size * 3, dtype=np.uint64).reshape(n, size, size, 3) % 251
        for k, v in {"fps": 25.0, "crop_box": [0, 0, size], "source_size": [size, size],
                     "source_fps": 25.0, "start_time": 0.0}.items():
            ds.attrs[k] = v
        store.stamp(ds, "test")
        g = f.create_group("landmarks")
        store.stamp(g, "test")
        g.create_dataset("points", data=np.zeros((n, 478, 3), np.float32))
        g.create_dataset("valid", data=np.ones(n, bool))
    return path


def test_round_trip_plain_h5py(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with h5py.File(p, "r") as f:  # readable without minerf
        assert f.attrs["format"] == "minerf-store" and int(f.attrs["version"]) == store.VERSION
        assert f["frames"].shape == (3, 8, 8, 3) and f["frames"].dtype == np.uint8
        assert f["frames"].chunks == (1, 8, 8, 3) and f["frames"].compression == "gzip"
        assert f["frames"][1, 2, 3, 1] == ((1 * 192 + 2 * 24 + 3 * 3 + 1) % 251)
    with store.open_store(p, require=("frames", "landmarks")) as f:
        assert f["landmarks/valid"].shape == (3,)
    assert not list(tmp_path.glob("*.part*"))
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_create_refuses_existing_and_leaves_nothing_on_failure(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with pytest.raises(UsageError):
        make_store(p)
    q = tmp_path / "t.h5"
    with pytest.raises(RuntimeError):
        with store.create_store(q, "test"):
            raise RuntimeError("boom")
    assert not q.exists() and not list(tmp_path.glob("*.part*"))


def test_newer_version_is_refused_with_exit_3(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["version"] = store.VERSION + 1
    with pytest.raises(FormatError, match="newer"):
        store.open_store(p)
    r = runner.invoke(app, ["info", str(p)])
    assert r.exit_code == 3 and "newer" in r.output


def test_group_version_and_foreign_format(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with h5py.File(p, "r+") as f:
        f["landmarks"].attrs["version"] = 99
    with pytest.raises(FormatError, match="/landmarks"):
        store.open_store(p)
    q = tmp_path / "other.h5"
    with h5py.File(q, "w") as f:
        f.create_dataset("x", data=[1])
    assert runner.invoke(app, ["info", str(q)]).exit_code == 3
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    r = runner.invoke(app, ["info", str(junk)])
    assert r.exit_code == 3 and "HDF5" in r.output


def test_missing_group_names_the_stage(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with pytest.raises(FormatError, match="fit3dmm"):
        store.open_store(p, require=("tracking",))


def test_inconsistent_frame_count_is_refused(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with h5py.File(p, "r+") as f:
        del f["landmarks/valid"]
        f["landmarks"].create_dataset("valid", data=np.ones(5, bool))
    with pytest.raises(FormatError, match="N=5"):
        store.open_store(p)


def test_add_node_refuses_existing_and_rolls_back(tmp_path):
    p = make_store(tmp_path / "s.h5")
    with pytest.raises(ValueError):
        with store.add_node(p, "audio", "test") as g:
            g.create_dataset("pcm", data=np.zeros(10, np.float32))
            raise ValueError("fail midway")
    with h5py.File(p, "r") as f:
        assert "audio" not in f
    with store.add_node(p, "audio", "test") as g:
        g.create_dataset("pcm", data=np.zeros(10, np.float32))
        g.attrs["sample_rate"] = 16000
    with pytest.raises(UsageError, match="--force"):
        with store.add_node(p, "audio", "test"):
            pass
    with store.add_node(p, "audio", "test", force=True) as g:
        g.create_dataset("pcm", data=np.ones(4, np.float32))
        g.attrs["sample_rate"] = 16000
    with h5py.File(p, "r") as f:
        assert f["audio/pcm"].shape == (4,)


def test_info_prints_json(tmp_path):
    p = make_store(tmp_path / "s.h5")
    r = runner.invoke(app, ["info", str(p)])
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["nodes"]["frames"]["shape"] == [3, 8, 8, 3]
    assert out["source_sha256"] == "0" * 64
    assert runner.invoke(app, ["info", str(tmp_path / "nope.h5")]).exit_code == 1


# ----------------------------------------------------------------------------- JPEG frames

FRAME_ATTRS = {"fps": 25.0, "crop_box": [0, 0, 48], "source_size": [64, 48], "source_fps": 25.0, "start_time": 0.0}


def smooth_frames(n=4, h=48, w=64):
    """Smooth colour gradients that move from frame to frame (what JPEG keeps well)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = [np.stack([128 + 100 * np.sin(xx / 11 + k), 128 + 100 * np.cos(yy / 9 - k),
                     128 + 60 * np.sin((xx + yy) / 15 + 2 * k)], -1) for k in range(n)]
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def make_frames_store(path, frames, quality=None):
    """A store holding only /frames (lossless when quality is None, else JPEG), written by FrameWriter."""
    n, h, w, _ = frames.shape
    with store.create_store(path, "test") as f:
        with store.FrameWriter(f, h, w, quality, measure=True) as writer:
            for i, frame in enumerate(frames):
                writer.put(i, frame)
        writer.trim(n)
        for k, v in FRAME_ATTRS.items():
            writer.dataset.attrs[k] = v
        store.stamp(writer.dataset, "test")
    return writer


def test_frame_reader_lossless_is_exact(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 48, 64, 3), dtype=np.uint8)
    p = tmp_path / "lossless.h5"
    make_frames_store(p, frames)
    with store.open_store(p) as f:
        assert f["frames"].shape == (5, 48, 64, 3) and "codec" not in f["frames"].attrs
        r = store.FrameReader(f)
        assert (r.codec, len(r), r.height, r.width, r.shape) == ("lossless", 5, 48, 64, (5, 48, 64, 3))
        np.testing.assert_array_equal(r[2], frames[2])
        np.testing.assert_array_equal(r[-1], frames[-1])
        np.testing.assert_array_equal(r[1:4], frames[1:4])
        np.testing.assert_array_equal(r[::-2], frames[::-2])
        np.testing.assert_array_equal(r[[4, 0, 4]], frames[[4, 0, 4]])
        np.testing.assert_array_equal(r[np.array([3, 1])], frames[[3, 1]])
        np.testing.assert_array_equal(r[np.array([True, False, True, False, False])], frames[[0, 2]])
        np.testing.assert_array_equal(np.stack(list(r)), frames)
        assert r[[]].shape == (0, 48, 64, 3) and r[3:1].shape == (0, 48, 64, 3)
        with pytest.raises(IndexError):
            r[5]
        with pytest.raises(IndexError):
            r[[0, -6]]


def test_frame_reader_jpeg_round_trip(tmp_path):
    frames = smooth_frames()
    p = tmp_path / "jpeg.h5"
    writer = make_frames_store(p, frames, quality=95)
    with h5py.File(p, "r") as f:  # the plain-h5py view: one JPEG file per frame
        ds = f["frames"]
        assert ds.shape == (4,) and h5py.check_vlen_dtype(ds.dtype) == np.uint8
        assert ds.attrs["codec"] == "jpeg" and ds.attrs["quality"] == 95
        assert (ds.attrs["height"], ds.attrs["width"]) == (48, 64)
        assert bytes(ds[0][:2]) == b"\xff\xd8"  # JPEG start-of-image marker
        assert int(f.attrs["version"]) == store.VERSION == 2
    with store.open_store(p) as f:
        r = store.FrameReader(f)
        assert (r.codec, r.quality, len(r), r.shape) == ("jpeg", 95, 4, (4, 48, 64, 3))
        got = r[:]
        assert got.dtype == np.uint8 and got.shape == frames.shape
        psnrs = [metrics.psnr(a, b) for a, b in zip(got, frames)]
        assert min(psnrs) > 35
        assert psnrs == pytest.approx([writer.psnr[i] for i in range(4)])  # measured while writing
        # RGB, not OpenCV's BGR: the channel means agree
        np.testing.assert_allclose(got.mean((0, 1, 2)), frames.mean((0, 1, 2)), atol=1.5)
        np.testing.assert_array_equal(r[2], got[2])
        np.testing.assert_array_equal(r[[3, 0, 3]], got[[3, 0, 3]])
        np.testing.assert_array_equal(r[-1], got[3])
        np.testing.assert_array_equal(store.decode_jpeg(r.encoded(1)), got[1])
    info = store.describe(p)["nodes"]["frames"]
    assert info["shape"] == [4, 48, 64, 3] and info["stored"]["codec"] == "jpeg"


def test_jpeg_store_validation(tmp_path):
    p = tmp_path / "jpeg.h5"
    make_frames_store(p, smooth_frames(), quality=80)
    assert runner.invoke(app, ["info", str(p)]).exit_code == 0
    # symbols come from len and the height/width attributes: they must agree with the masks
    with h5py.File(p, "r+") as f:
        g = f.create_group("masks")
        store.stamp(g, "test")
        g.create_dataset("head", data=np.zeros((4, 48, 64), np.uint8))
        g.create_dataset("person", data=np.zeros((4, 48, 64), np.uint8))
    with store.open_store(p) as f:
        assert store.validate(f, p)["W"] == 64
    with h5py.File(p, "r+") as f:
        f["frames"].attrs["width"] = 32
    with pytest.raises(FormatError, match="W=64"):
        store.open_store(p)
    for broken in ("height", "width"):
        q = tmp_path / f"no_{broken}.h5"
        make_frames_store(q, smooth_frames(), quality=80)
        with h5py.File(q, "r+") as f:
            del f["frames"].attrs[broken]
        with pytest.raises(FormatError, match=broken):
            store.open_store(q)
        r = runner.invoke(app, ["info", str(q)])
        assert r.exit_code == 3 and broken in r.output
    q = tmp_path / "codec.h5"
    make_frames_store(q, smooth_frames(), quality=80)
    with h5py.File(q, "r+") as f:
        f["frames"].attrs["codec"] = "webp"
    with pytest.raises(FormatError, match="webp"):
        store.open_store(q)


def test_version_1_stores_are_read_but_jpeg_needs_version_2(tmp_path):
    p = make_store(tmp_path / "v1.h5")
    with h5py.File(p, "r+") as f:
        for obj in (f, f["frames"], f["landmarks"]):
            obj.attrs["version"] = 1
    with store.open_store(p) as f:  # a lossless version-1 store: still read
        np.testing.assert_array_equal(store.FrameReader(f)[1], f["frames"][1])
    q = tmp_path / "jpeg_v1.h5"
    make_frames_store(q, smooth_frames(), quality=80)
    with h5py.File(q, "r+") as f:
        f.attrs["version"] = 1
    with pytest.raises(FormatError, match="JPEG"):
        store.open_store(q)


def test_frame_writer_checks_its_input(tmp_path):
    with pytest.raises(UsageError, match="jpeg-quality"):
        make_frames_store(tmp_path / "q.h5", smooth_frames(), quality=101)
    with pytest.raises(ValueError, match="expected"):
        make_frames_store(tmp_path / "s.h5", smooth_frames().astype(np.float32), quality=90)
    assert not list(tmp_path.iterdir())  # nothing left behind
