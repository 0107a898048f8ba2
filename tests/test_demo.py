"""`minerf demo` end to end, shrunk (the real CPU size takes ~3 minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
from typer.testing import CliRunner

from minerf_cli import demo as demo_mod
from minerf_cli.app import app

runner = CliRunner()


def test_demo_runs_every_stage(tmp_path, monkeypatch):
    tiny = demo_mod.DemoSize(ids=2, seconds=0.6, size=128, steps=4, rays=64, samples=(8, 8), transfer_frames=4,
                             field_options={"levels": 2, "log2_table": 10, "max_res": 32, "hidden": 16,
                                            "color_hidden": 16})
    monkeypatch.setattr(demo_mod, "CPU", tiny)
    out = tmp_path / "demo"
    res = runner.invoke(app, ["-q", "demo", "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["identities"] == ["id00", "id01"] and summary["steps"] == 4
    for key in ("transfer_video", "reconstruction_video", "metrics"):
        assert Path(summary[key]).is_file() and Path(summary[key]).stat().st_size > 0
    metrics = json.loads(Path(summary["metrics"]).read_text())
    assert set(metrics) == {"reconstruction", "transfer"}
    assert isinstance(metrics["reconstruction"]["psnr"], float) and metrics["reconstruction"]["psnr"] > 5
    assert (out / "run" / "config.json").is_file() and (out / "run" / "training_curve.png").is_file()
    with h5py.File(out / "id01_with_id00_expressions.h5") as f:
        assert f["frames"].shape[0] == 4
    # a second run into the same directory needs --force
    res = runner.invoke(app, ["-q", "demo", "-o", str(out), "--device", "cpu"])
    assert res.exit_code == 2 and "--force" in res.output
