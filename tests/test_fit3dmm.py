"""`minerf fit3dmm` end to end: synthetic talking head -> prep -> fit, against its ground truth."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from minerf_cli import store
from minerf_cli.app import app
from minerf_cli.facemodel import load_face_model

runner = CliRunner()


@pytest.fixture(scope="module")
def prepped(synth_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "clip.h5"
    res = runner.invoke(app, ["-q", "prep", synth_clip["video"], "-o", str(out), "--size", "256"])
    assert res.exit_code == 0, res.output
    return out


def test_fit_recovers_synthetic_ground_truth(prepped, synth_clip, tmp_path):
    path = tmp_path / "clip.h5"
    shutil.copy(prepped, path)
    res = runner.invoke(app, ["fit3dmm", str(path)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["output"] == str(path) and summary["frames"] == synth_clip["frames"]
    assert summary["mean_error_px"] < 2.0  # at 256 px
    gt = np.load(synth_clip["gt"])
    m = load_face_model()
    with store.open_store(path, require=("tracking",)) as f:
        t = f["tracking"]
        ex, M = t["expression"][()], t["camera_from_head"][()]
        assert t["intrinsics"].shape == (3, 3) and t["identity"].shape == (m.num_identity,)
        assert [n.decode() for n in t.attrs["expression_names"]] == list(m.expression_names)
        assert np.isfinite(t["fit_error"][()]).all()
    assert ex.min() >= 0 and ex.max() <= 1
    jaw = m.expression_index("jawOpen")
    n = len(ex)
    assert np.corrcoef(ex[:, jaw], gt["expression"][:n, jaw])[0, 1] > 0.8
    assert np.abs(ex[:, jaw] - gt["expression"][:n, jaw]).mean() < 0.12
    cos = (np.einsum("nij,nij->n", M[:, :3, :3], gt["camera_from_head"][:n, :3, :3]) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).mean() < 6.0
    # a second run needs --force
    res = runner.invoke(app, ["fit3dmm", str(path)])
    assert res.exit_code == 2 and "--force" in res.output
    assert runner.invoke(app, ["fit3dmm", str(path), "--force", "--focal", "400"]).exit_code == 0
    with h5py.File(path) as f:
        assert f["tracking/intrinsics"][0, 0] == pytest.approx(400.0)


def test_store_without_landmarks_is_a_format_error(prepped, tmp_path):
    path = tmp_path / "bare.h5"
    shutil.copy(prepped, path)
    with h5py.File(path, "r+") as f:
        del f["landmarks"]
    res = runner.invoke(app, ["fit3dmm", str(path)])
    assert res.exit_code == 3 and "no /landmarks" in res.output and "minerf prep" in res.output
    with h5py.File(path) as f:
        assert "tracking" not in f


def test_bad_inputs(prepped, tmp_path):
    assert runner.invoke(app, ["fit3dmm", str(tmp_path / "missing.h5")]).exit_code == 1
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    assert runner.invoke(app, ["fit3dmm", str(junk)]).exit_code == 3
    path = tmp_path / "noface.h5"
    shutil.copy(prepped, path)
    with h5py.File(path, "r+") as f:
        f["landmarks/valid"][...] = False
    res = runner.invoke(app, ["fit3dmm", str(path)])
    assert res.exit_code == 1 and "no frame has face landmarks" in res.output
    res = runner.invoke(app, ["fit3dmm", str(prepped), "--focal", "-5", "--force"])
    assert res.exit_code == 2
