"""The HDF5 frame store: round trip, validation and exit codes."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import store
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
