"""The shell scripts in examples/ keep working: run them on tiny synthetic clips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
NEEDED = ("synth", "prep", "fit3dmm", "info")
# Tiny clips: one identity, one second. --size only when synth has it.
SYNTH_ARGS = ["--ids", "1", "--seconds", "1"]
PREP_ARGS = "--size 192"

pytestmark = pytest.mark.slow


def _env() -> dict:
    """PATH with this interpreter's scripts first, so the scripts find `minerf` and `python3`."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "COLUMNS": "120"}


def _registered() -> set[str]:
    import typer.main

    from minerf_cli.app import app

    return set(typer.main.get_command(app).commands)


def _synth_args() -> list[str]:
    out = subprocess.run(["minerf", "synth", "--help"], capture_output=True, text=True, env=_env(), timeout=120)
    return SYNTH_ARGS + (["--size", "192"] if "--size" in out.stdout else [])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run examples/synthetic_pipeline.sh once; (out dir, completed process)."""
    missing = [c for c in NEEDED if c not in _registered()]
    if missing:
        pytest.skip(f"examples need `minerf {' / '.join(missing)}`, not registered yet (see `minerf --help`)")
    out = tmp_path_factory.mktemp("pipeline")
    env = {**_env(), "MINERF_SYNTH_ARGS": " ".join(_synth_args()), "MINERF_PREP_ARGS": PREP_ARGS, "MINERF_JOBS": "2"}
    proc = subprocess.run(["bash", str(EXAMPLES / "synthetic_pipeline.sh"), str(out)], capture_output=True,
                          text=True, env=env, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"synthetic_pipeline.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return out, proc


def _json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every stdout line is JSON


def test_synthetic_pipeline(pipeline):
    out, proc = pipeline
    records = _json_lines(proc.stdout)
    stores = sorted((out / "stores").glob("*.h5"))
    videos = sorted((out / "videos").glob("*.mp4"))
    assert videos and len(stores) == len(videos)
    assert sum(r.get("command") == "prep" for r in records) == len(videos)
    assert sum(r.get("command") == "fit3dmm" for r in records) == len(videos)
    infos = [r for r in records if r.get("format") == "minerf-store"]
    assert len(infos) == len(stores)
    for info in infos:  # `minerf info` shows what fit3dmm added, string attributes as JSON strings
        names = info["nodes"]["tracking"]["attrs"]["expression_names"]
        assert len(names) == 53 and "jawOpen" in names
    for store in stores:
        with h5py.File(store, "r") as f:
            for node in ("frames", "landmarks", "masks", "background", "tracking"):
                assert node in f, f"{store.name} lacks /{node}"


def test_prep_folder_skips_done_stores(pipeline):
    out, _ = pipeline
    proc = subprocess.run(["bash", str(EXAMPLES / "prep_folder.sh"), str(out / "videos"), str(out / "stores"), "2"],
                          capture_output=True, text=True, env=_env(), timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "skipped" in proc.stderr


def test_prep_folder_reports_a_bad_clip_and_goes_on(pipeline, tmp_path):
    """A corrupt video fails alone; a store without /tracking gets fit3dmm only."""
    out, _ = pipeline
    videos, stores = tmp_path / "videos", tmp_path / "stores"
    videos.mkdir()
    stores.mkdir()
    good = sorted((out / "videos").glob("*.mp4"))[0]
    shutil.copy(good, videos / "good.mp4")
    shutil.copy(out / "stores" / f"{good.stem}.h5", stores / "good.h5")
    with h5py.File(stores / "good.h5", "r+") as f:
        del f["tracking"]  # as if fit3dmm had not run yet
    (videos / "bad.mp4").write_bytes(b"this is not a video\n" * 100)
    env = {**_env(), "MINERF_PREP_ARGS": PREP_ARGS}
    proc = subprocess.run(["bash", str(EXAMPLES / "prep_folder.sh"), str(videos), str(stores), "2"],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert "bad.mp4: failed" in proc.stderr
    assert "good.h5 exists without /tracking: running fit3dmm only" in proc.stderr
    assert sorted(p.name for p in stores.iterdir()) == ["good.h5"]  # nothing left behind for bad.mp4
    records = _json_lines(proc.stdout)
    assert [(r["command"], Path(r["video"]).name) for r in records] == [("fit3dmm", "good.mp4")]
    with h5py.File(stores / "good.h5", "r") as f:
        assert "tracking" in f


def test_scripts_print_usage_on_bad_arguments():
    for script in ("prep_folder.sh", "synthetic_pipeline.sh"):
        proc = subprocess.run(["bash", str(EXAMPLES / script)], capture_output=True, text=True, env=_env(),
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 2
        assert "examples/" + script in proc.stderr
