"""train -> resume -> personalize -> transfer -> evaluate through the CLI, on tiny synthetic
identities (128 px, 15 frames) and a tiny field (CPU, ~0.3 s/step); plus the error paths."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from minerf_cli import store
from minerf_cli.app import app

runner = CliRunner()

TINY = ["--samples", "8:8", "--field-option", "width=32", "--field-option", "depth=4",
        "--field-option", "color_width=16", "--rays", "32", "--device", "cpu", "--test-frames", "1",
        "--val-every", "1000"]
N_FRAMES = 15  # 0.6 s at 25 fps
N_TEST = 2  # ceil(10% of 15)


def cli(*args):
    return runner.invoke(app, ["-q", *(str(a) for a in args)])


def ok(res) -> dict:
    assert res.exit_code == 0, f"exit {res.exit_code}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout
    return json.loads(lines[0])


def fails(res, code: int | None, *needles: str) -> str:
    """A failure: the exit code (any non-zero if None), nothing on stdout, one error line
    on stderr containing every needle; returns that line."""
    if code is None:
        assert res.exit_code not in (0, None), (res.exit_code, res.stdout, res.stderr)
    else:
        assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def metrics_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict:
    """Two tracked identities (id00, id01), a third person (third.h5, another seed), and a
    prepped but untracked copy of id00 (prepped.h5)."""
    from minerf_cli.synth import synthesize

    d = Path(tmp_path_factory.mktemp("chain_stores"))
    clips = synthesize(d / "syn", ids=2, seconds=0.6, size=128, fps=25.0, seed=3)
    third = synthesize(d / "syn3", ids=1, seconds=0.6, size=128, fps=25.0, seed=11)
    out = {}
    for name, clip in (("id00", clips[0]), ("id01", clips[1]), ("third", third[0])):
        path = d / f"{name}.h5"
        ok(cli("prep", clip["video"], "-o", path, "--size", "128"))
        if name == "id00":
            shutil.copy(path, d / "prepped.h5")
        ok(cli("fit3dmm", path))
        out[name] = path
    out["prepped"] = d / "prepped.h5"
    out["dir"] = d
    return out


@pytest.fixture(scope="module")
def trained(stores) -> dict:
    """RUN: 4 steps on id00 + id01 (checkpoint every 2), then resumed to 6 steps. Records
    the state after the first 4 steps for the chain test."""
    run = stores["dir"] / "run"
    first = ok(cli("train", "--ids", stores["id00"], stores["id01"], "-o", run, *TINY,
                   "--steps", "4", "--checkpoint-every", "2"))
    after4 = {"checkpoints": checkpoint_names(run), "metrics": metrics_rows(run),
              "config": json.loads((run / "config.json").read_text()),
              "val": sorted(p.name for p in (run / "val").glob("*.png")),
              "files": sorted(p.name for p in run.iterdir())}
    resumed = ok(cli("train", "-o", run, "--resume", "--steps", "6"))
    return {"run": run, "first": first, "after4": after4, "resumed": resumed}


@pytest.fixture(scope="module")
def personalized(stores, trained) -> dict:
    """RUN2 = RUN + a new person (third.h5 as "newbie"), 2 fine-tuning steps; RUN's files
    are hashed before and after."""
    run, run2 = trained["run"], stores["dir"] / "run2"
    before = tree_digest(run)
    summary = ok(cli("personalize", run, "--id", "newbie", "--store", stores["third"], "-o", run2, "--steps", "2",
                     "--rays", "32", "--device", "cpu", "--test-frames", "1"))
    return {"run2": run2, "summary": summary, "run_before": before, "run_after": tree_digest(run)}


# -- 1. the chain ---------------------------------------------------------------------------------

def test_train_resume_personalize_transfer_evaluate(stores, trained, personalized, tmp_path):
    run = trained["run"]
    first, after4 = trained["first"], trained["after4"]
    # train, 4 steps
    assert first["command"] == "train" and first["steps"] == 4 and first["resumed_from"] is None
    assert first["device"] == "cpu" and first["field"] == "vanilla" and first["module"] == "m"
    assert [r["id"] for r in first["identities"]] == ["id00", "id01"]
    psnrs = [r["test_psnr"] for r in first["identities"]]
    assert all(isinstance(v, float) and math.isfinite(v) and 3.0 < v < 60.0 for v in psnrs), psnrs
    assert all(r["test_frames"] == 1 for r in first["identities"])
    assert first["mean_test_psnr"] == pytest.approx(sum(psnrs) / 2, abs=2e-3)
    assert first["checkpoint"].endswith("step_0000004.pt")
    cfg = after4["config"]
    assert cfg["format"] == "minerf-run" and cfg["version"] == 1
    assert [d["name"] for d in cfg["identities"]] == ["id00", "id01"]
    assert [d["frames"] for d in cfg["identities"]] == [N_FRAMES, N_FRAMES]
    assert all(d["test_frames"] == N_TEST and d["train_frames"] == N_FRAMES - N_TEST for d in cfg["identities"])
    assert cfg["model"]["n_coarse"] == 8 and cfg["model"]["field_options"]["width"] == 32
    assert cfg["model"]["expr_dim"] == 53 and cfg["train"]["steps"] == 4
    assert "step_0000004.pt" in after4["checkpoints"] and len(after4["checkpoints"]) <= 2
    assert after4["checkpoints"] == ["step_0000002.pt", "step_0000004.pt"]
    assert [int(r["step"]) for r in after4["metrics"]] == [2, 4]
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in after4["metrics"])
    assert after4["metrics"][-1]["test_psnr"] != ""  # the final step renders a validation frame
    assert after4["val"] == ["step_0000004_id00.png", "step_0000004_id01.png"]
    for name in ("config.json", "checkpoints", "metrics.csv", "val", "training_curve.png",
                 "identity_codes.png", "summary.json"):
        assert name in after4["files"]
    import cv2

    val = cv2.imread(str(run / "val" / "step_0000004_id00.png"))
    assert val.shape == (128, 256, 3)  # reference | render
    for png in ("training_curve.png", "identity_codes.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume to 6 steps
    resumed = trained["resumed"]
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    assert resumed["checkpoint"].endswith("step_0000006.pt")
    assert checkpoint_names(run) == ["step_0000004.pt", "step_0000006.pt"]
    steps = [int(r["step"]) for r in metrics_rows(run)]
    assert steps == [2, 4, 6]
    walls = [float(r["wall_s"]) for r in metrics_rows(run)]
    assert walls == sorted(walls) and walls[-1] >= walls[1]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 6
    # a finished run does not resume without a larger --steps
    fails(cli("train", "-o", run, "--resume"), 2, "already trained for 6 steps")

    # personalize: a new person
    run2, pers = personalized["run2"], personalized["summary"]
    assert pers["command"] == "personalize" and pers["new_identity"] is True and pers["id"] == "newbie"
    assert pers["steps"] == 2 and pers["frames"] == N_FRAMES and pers["train_frames"] == N_FRAMES - N_TEST
    assert pers["identity"]["id"] == "newbie" and math.isfinite(pers["identity"]["test_psnr"])
    for key in ("others_before", "others_after"):
        assert [r["id"] for r in pers[key]] == ["id00", "id01"], pers[key]
        assert all(math.isfinite(r["test_psnr"]) for r in pers[key])
    cfg2 = json.loads((run2 / "config.json").read_text())
    assert cfg2["format"] == "minerf-run"
    assert [d["name"] for d in cfg2["identities"]] == ["id00", "id01", "newbie"]
    assert cfg2["identities"][2]["store"] == str(stores["third"].resolve())
    assert cfg2["model"]["frames_per_video"] == [N_FRAMES] * 3
    assert cfg2["personalized"]["new_identity"] is True and cfg2["personalized"]["base_steps"] == 6
    assert "step_0000002.pt" in checkpoint_names(run2)
    ck = torch.load(run2 / "checkpoints" / "step_0000002.pt", weights_only=True)
    assert ck["model"]["identity.table.weight"].shape[0] == 3
    # RUN is untouched
    assert personalized["run_after"] == personalized["run_before"]
    assert len(json.loads((run / "config.json").read_text())["identities"]) == 2

    # transfer: newbie driven by id00, side by side
    mp4, out_h5 = tmp_path / "out.mp4", tmp_path / "out.h5"
    tr = ok(cli("transfer", run2, "--id", "newbie", "--from", stores["id00"], "-o", mp4, "--store", out_h5,
                "--side-by-side", "--device", "cpu"))
    assert tr["mode"] == "transfer" and tr["frames"] == N_FRAMES and tr["source_frames"] == [0, N_FRAMES]
    assert tr["output"] == str(mp4) and tr["store"] == str(out_h5) and tr["audio"] is True
    from minerf_cli.video import probe, read_frames

    info = probe(mp4)
    assert (info.width, info.height) == (256, 128) and info.fps == pytest.approx(25.0)
    assert info.has_audio
    frames = list(read_frames(mp4))
    assert len(frames) == N_FRAMES and frames[0].shape == (128, 256, 3)
    with store.open_store(out_h5, require=("frames",)) as f:
        reader = store.FrameReader(f)
        assert len(reader) == N_FRAMES and (reader.height, reader.width) == (128, 128)
        assert f["frames"].attrs["reference_frames"].tolist() == list(range(N_FRAMES))
        assert f["frames"].attrs["target_frames"].tolist() == list(range(N_FRAMES))
        assert f["frames"].attrs["fps"] == pytest.approx(25.0)
        rendered = reader[np.arange(N_FRAMES)]
    assert rendered.shape == (N_FRAMES, 128, 128, 3)
    # the right half of the mp4 is the stored render (up to H.264 loss); the left the source
    with store.open_store(stores["id00"]) as f:
        source0 = store.FrameReader(f)[np.arange(1)][0]
    assert np.abs(frames[0][:, 128:].astype(float) - rendered[0]).mean() < 12
    assert np.abs(frames[0][:, :128].astype(float) - source0).mean() < 12

    # reconstruction of id01's held-out frames
    rec = tmp_path / "rec.h5"
    r = ok(cli("transfer", run2, "--id", "id01", "--from", stores["id01"], "--store", rec, "--device", "cpu"))
    assert r["mode"] == "reconstruction" and r["frames"] == N_TEST
    assert r["source_frames"] == [N_FRAMES - N_TEST, N_FRAMES]
    with store.open_store(rec) as f:
        assert f["frames"].attrs["reference_frames"].tolist() == list(range(N_FRAMES - N_TEST, N_FRAMES))
    ev = ok(cli("evaluate", rec, "--ref", stores["id01"]))
    assert ev["frames"] == N_TEST and ev["reference_frames"] == f"{N_FRAMES - N_TEST}:{N_FRAMES}"
    assert isinstance(ev["psnr"], float) and math.isfinite(ev["psnr"]) and 3.0 < ev["psnr"] < 60.0


# -- 2. checkpoints are plain tensors; pickles are refused ---------------------------------------

class _Payload:
    """Unpickling this runs os.mkdir(marker): proof that a loader executed the pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class _Plain:
    def __init__(self):
        self.step = 6


def _refused(res, code: int, *needles: str) -> str:
    """Exit code, nothing on stdout, an error naming each needle on its first line, no traceback
    (the one-line rule for checkpoint errors is checked on its own, below)."""
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr
    first = res.stderr.strip().splitlines()[0]
    assert first.startswith("error:") and "internal error" not in first, first
    for needle in needles:
        assert needle in first, (needle, first)
    return first


def _poisoned_run(trained, tmp_path) -> tuple[Path, Path]:
    """A copy of RUN whose latest checkpoint unpickles to os.mkdir(marker)."""
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    marker = tmp_path / "pwned"
    torch.save({"format": "minerf-checkpoint", "version": 1, "step": 6, "evil": _Payload(str(marker))},
               copy / "checkpoints" / "step_0000006.pt")
    return copy, marker


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_loads_weights_only_and_pickles_are_refused(trained, stores, tmp_path):
    run = trained["run"]
    ck = torch.load(run / "checkpoints" / "step_0000006.pt", weights_only=True)
    assert ck["format"] == "minerf-checkpoint" and ck["step"] == 6 and ck["frames_per_video"] == [N_FRAMES] * 2
    assert ck["model"]["identity.table.weight"].shape == (2, 53)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert ck["optimizer"]["state"]  # Adam moments for --resume

    copy, marker = _poisoned_run(trained, tmp_path)
    _refused(cli("transfer", copy, "--id", "id00", "--from", stores["id00"], "--store", tmp_path / "a.h5",
                 "--device", "cpu"), 3, "step_0000006.pt", "not a readable minerf checkpoint")
    assert not marker.exists()  # the pickle was never executed
    assert not (tmp_path / "a.h5").exists()
    _refused(cli("train", "-o", copy, "--resume", "--steps", "8"), 3, "step_0000006.pt")
    assert not marker.exists()
    with open(copy / "checkpoints" / "step_0000006.pt", "wb") as fh:
        pickle.dump(_Plain(), fh)
    _refused(cli("transfer", copy, "--id", "id00", "--from", stores["id00"], "--store", tmp_path / "b.h5",
                 "--device", "cpu"), 3, "step_0000006.pt")
    _refused(cli("personalize", copy, "--id", "x", "--store", stores["third"], "-o", tmp_path / "p",
                 "--steps", "1", "--device", "cpu"), 3, "step_0000006.pt")
    assert not (tmp_path / "p").exists() and not marker.exists()
    # a tensors-only dict that is not a minerf checkpoint: refused with its own message
    torch.save({"weights": torch.zeros(3)}, copy / "checkpoints" / "step_0000006.pt")
    fails(cli("transfer", copy, "--id", "id00", "--from", stores["id00"], "--store", tmp_path / "c.h5",
              "--device", "cpu"), 3, "step_0000006.pt", "not a minerf checkpoint")


def test_refused_checkpoint_error_is_one_line(trained, stores, tmp_path):
    copy, marker = _poisoned_run(trained, tmp_path)
    fails(cli("transfer", copy, "--id", "id00", "--from", stores["id00"], "--store", tmp_path / "a.h5",
              "--device", "cpu"), 3, "step_0000006.pt")


# -- 3. bad input ---------------------------------------------------------------------------------

def test_train_on_an_untracked_store_names_fit3dmm(stores, tmp_path):
    out = tmp_path / "r"
    fails(cli("train", "--ids", stores["prepped"], "-o", out, *TINY, "--steps", "2"), 3, "fit3dmm", "prepped.h5")
    assert not out.exists()


def test_transfer_unknown_identity_lists_the_known_ones(trained, stores, tmp_path):
    fails(cli("transfer", trained["run"], "--id", "nobody", "--from", stores["id00"], "--store", tmp_path / "x.h5",
              "--device", "cpu"), 2, "'nobody'", "id00, id01")
    assert not (tmp_path / "x.h5").exists()


def _with_52_blendshapes(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        t = f["tracking"]
        expr = t["expression"][()]
        attrs = dict(t["expression"].attrs)
        del t["expression"]
        ds = t.create_dataset("expression", data=expr[:, :52])
        for k, v in attrs.items():
            ds.attrs[k] = v
        t.attrs["expression_names"] = t.attrs["expression_names"][:52]
    with store.open_store(dst, require=("tracking",)) as f:  # still a valid store
        assert f["tracking/expression"].shape == (N_FRAMES, 52)
    return dst


def test_expression_dimension_mismatch(trained, stores, tmp_path):
    e52 = _with_52_blendshapes(stores["id01"], tmp_path / "e52.h5")
    out = tmp_path / "r"
    fails(cli("train", "--ids", stores["id00"], e52, "-o", out, *TINY, "--steps", "2"), None,
          "expression dimensions differ", "52", "53")
    assert not out.exists()
    fails(cli("transfer", trained["run"], "--id", "id00", "--from", e52, "--store", tmp_path / "x.h5",
              "--device", "cpu"), 3, "e52.h5", "52 blendshapes", "53")
    fails(cli("personalize", trained["run"], "--id", "e52", "--store", e52, "-o", tmp_path / "p", "--steps", "1",
              "--device", "cpu"), 3, "e52.h5", "52 blendshapes")
    assert not (tmp_path / "p").exists()


def test_run_directory_errors(trained, stores, tmp_path):
    run = trained["run"]
    before = tree_digest(run)
    fails(cli("train", "--ids", stores["id00"], "-o", run, *TINY, "--steps", "2"), 2, "--force")
    assert tree_digest(run) == before
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    fails(cli("train", "--ids", stores["id00"], "-o", other, *TINY, "--steps", "2", "--force"), 2)
    assert (other / "keep.txt").read_text() == "mine"
    fails(cli("train", "-o", tmp_path / "missing", "--resume", "--steps", "2"), None, "missing")
    fails(cli("train", "--ids", stores["id00"], "-o", run, "--resume"), 2, "--resume")
    fails(cli("train", "-o", tmp_path / "new", *TINY), 2, "no stores")
    # a run from a newer minerf
    newer = tmp_path / "newer"
    shutil.copytree(run, newer)
    cfg = json.loads((newer / "config.json").read_text())
    cfg["version"] = 99
    (newer / "config.json").write_text(json.dumps(cfg))
    fails(cli("transfer", newer, "--id", "id00", "--from", stores["id00"], "--store", tmp_path / "x.h5",
              "--device", "cpu"), 3, "99", "newer")
    fails(cli("train", "-o", newer, "--resume", "--steps", "8"), 3, "99")
    fails(cli("personalize", newer, "--id", "id00", "--store", stores["id00"], "-o", tmp_path / "p",
              "--device", "cpu"), 3, "99")


def test_option_errors(stores, tmp_path):
    out = tmp_path / "r"
    fails(cli("train", "--ids", stores["id00"], "-o", out, *TINY, "--module", "zz"), 2, "'zz'", "m, ")
    args = [a if a != "cpu" else "cuda" for a in TINY]
    if not torch.cuda.is_available():
        fails(cli("train", "--ids", stores["id00"], "-o", out, *args, "--steps", "2"), 2, "CUDA is not available")
    fails(cli("train", "--ids", stores["id00"], "-o", out, *TINY, "--device", "tpu"), 2, "tpu")
    fails(cli("train", "--ids", stores["id00"], "-o", out, *TINY, "--field", "nope"), 2, "nope")
    fails(cli("train", "--ids", stores["id00"], "-o", out, *TINY, "--samples", "8"), 2, "COARSE:FINE")
    fails(cli("train", "--ids", stores["id00"], "-o", out, *TINY, "--field-option", "bogus=1"), 2, "bogus")
    fails(cli("train", "--ids", stores["id00"], "-o", out, *TINY, "--precision", "fp8"), 2, "fp8")
    assert not out.exists()


# -- 4. NaN in training ---------------------------------------------------------------------------

def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(stores, tmp_path, monkeypatch):
    from minerf_cli import runs, training

    real = training.minerf_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2:
            losses = dict(losses, total=losses["total"] * float("nan"))
        return losses

    monkeypatch.setattr(training, "minerf_loss", poisoned)
    run = tmp_path / "nan"
    res = runner.invoke(app, ["-q", "train", "--ids", str(stores["id00"]), str(stores["id01"]), "-o", str(run),
                              *TINY, "--steps", "6", "--checkpoint-every", "2", "--log-every", "2"])
    line = fails(res, 1, "diverged", "step 4")
    assert str(run / "checkpoints") in line
    assert calls["n"] == 4
    assert checkpoint_names(run) == ["step_0000002.pt"]
    ck = torch.load(run / "checkpoints" / "step_0000002.pt", weights_only=True)
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    model, cfg, _ = runs.load_model(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [int(r["step"]) for r in metrics_rows(run)] == [2]
    # the kept checkpoint resumes (the loss is healthy again)
    monkeypatch.setattr(training, "minerf_loss", real)
    resumed = ok(cli("train", "-o", run, "--resume"))
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 6
    assert [int(r["step"]) for r in metrics_rows(run)] == [2, 4, 6]


# -- resume after a kill between a metrics row and its checkpoint ---------------------------------

def test_resume_after_a_kill_does_not_repeat_metrics_rows(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    # as if killed after step 6's metrics row was written but before its checkpoint
    (copy / "checkpoints" / "step_0000006.pt").unlink()
    resumed = ok(cli("train", "-o", copy, "--resume", "--steps", "6"))
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    steps = [int(r["step"]) for r in metrics_rows(copy)]
    assert steps == sorted(set(steps)), steps  # [2, 4, 6, 6] today


def test_resume_of_a_personalized_run_is_clean(personalized, tmp_path):
    copy = tmp_path / "run2"
    shutil.copytree(personalized["run2"], copy)
    res = cli("train", "-o", copy, "--resume", "--steps", "3")
    assert "internal error" not in res.stderr, res.stderr
    if res.exit_code == 0:  # either it continues ...
        assert json.loads(res.stdout)["resumed_from"] == 2
    else:  # ... or refuses with a one-line usage / format error
        fails(res, res.exit_code)
        assert res.exit_code in (2, 3)


def test_force_keeps_the_old_run_when_the_new_stores_are_bad(trained, stores, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained["run"], copy)
    fails(cli("train", "--ids", tmp_path / "typo.h5", "-o", copy, *TINY, "--steps", "2", "--force"), 2, "typo.h5")
    assert (copy / "config.json").is_file() and (copy / "checkpoints" / "step_0000006.pt").is_file()
    fails(cli("train", "--ids", stores["prepped"], "-o", copy, *TINY, "--steps", "2", "--force"), 3, "fit3dmm")
    assert (copy / "config.json").is_file()


def test_streamed_frames_equal_preloaded_and_stay_bounded(stores, tmp_path):
    """--cache-frames N keeps at most N decoded frames per clip, read from the store on
    demand; they are the same frames the preloading path holds."""
    import torch

    from minerf_cli.clips import load_clip

    whole = load_clip(stores["id00"], "cpu")
    streamed = load_clip(stores["id00"], "cpu", cache_frames=3)
    assert whole.cache.capacity is None and streamed.cache.capacity == 3
    for n in [0, 5, 1, 5, 14, 2, 0]:
        assert torch.equal(whole.frame(n), streamed.frame(n))
        assert torch.equal(whole.background(n), streamed.background(n))
    assert len(streamed.cache._lru) == 3 and streamed.cache.reads == 6  # 5 hit once, 0 was evicted
    assert streamed.cache.nbytes_resident() == 3 * 128 * 128 * 4
    streamed.cache.close()
    s = ok(cli("train", "--ids", stores["id00"], stores["id01"], "-o", tmp_path / "run", "--steps", "2",
               "--cache-frames", "2", *TINY))
    assert s["steps"] == 2 and all(r["test_psnr"] is not None for r in s["identities"])


def test_lipsync_recipe_without_latent_codes_and_with_mouth_rays(stores, tmp_path):
    """train --latent-dim 0 --mouth-rays 0.3 --mask-loss 0.1 (the fast field, smoothing on, region attention),
    then personalize an unseen person and render: the whole chain runs without latent codes."""
    run = tmp_path / "run"
    s = ok(cli("train", "--ids", stores["id00"], "-o", run, "--steps", "3", "--latent-dim", "0",
               "--mouth-rays", "0.3", "--mask-loss", "0.1", "--field", "fast", "--smooth-after", "2",
               "--field-option", "cond_attention=1", "--field-option", "log2_table=10", "--samples", "8:8",
               "--rays", "32", "--device", "cpu", "--test-frames", "1", "--val-every", "1000"))
    assert s["steps"] == 3 and math.isfinite(s["mean_test_psnr"])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == 0 and cfg["train"]["mouth_fraction"] == 0.3
    assert cfg["train"]["mask_weight"] == 0.1
    p = ok(cli("personalize", run, "--id", "third", "--store", stores["third"], "-o", tmp_path / "p", "--steps", "2"))
    assert p["new_identity"] is True
    pcfg = json.loads((tmp_path / "p" / "config.json").read_text())["train"]
    assert pcfg["mouth_fraction"] == 0.3 and pcfg["mask_weight"] == 0.1
    t = ok(cli("transfer", tmp_path / "p", "--id", "third", "--from", stores["id00"], "--frames", "0:2",
               "--store", tmp_path / "t.h5", "--march-steps", "64"))
    assert t["frames"] == 2
    bad = cli("train", "--ids", stores["id00"], "-o", tmp_path / "bad", *TINY, "--mouth-rays", "1.5")
    assert bad.exit_code == 2 and "--mouth-rays" in bad.stderr and not (tmp_path / "bad").exists()
