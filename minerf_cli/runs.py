"""A training run on disk: versioned config, checkpoints, metrics.

Layout of a run directory::

    RUN/config.json            format "minerf-run", version, model + training config, identities
    RUN/checkpoints/step_NNNNNNN.pt   tensors only (loaded with weights_only=True)
    RUN/metrics.csv            step, wall_s, lr, loss, psnr, test_psnr
    RUN/val/step_NNNNNNN_<id>.png    validation renders (reference | render)
    RUN/training_curve.png, RUN/identity_codes.png, RUN/summary.json

A checkpoint is a dict of tensors and plain numbers/strings/lists (model state, optimizer
state, step, RNG states): ``torch.load(..., weights_only=True)`` reads it without
unpickling arbitrary objects. Files are written to a temporary name and renamed, so a
killed run leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from . import __version__
from .errors import FormatError, MinerfError, UsageError
from .fsutil import load_tensor_file, write_atomically
from .nerf.model import MINeRF, ModelConfig

FORMAT = "minerf-run"
VERSION = 1
CHECKPOINT_FORMAT = "minerf-checkpoint"
KEEP_CHECKPOINTS = 2
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def check_new_run_dir(run: Path, force: bool, hint: str = "use --force to replace it") -> bool:
    """May ``run`` become a new run directory? -> True when an existing run will be replaced
    (the caller removes it once its new inputs are known to be good). Refuses (exit 2) an
    existing one without ``force``, a non-empty directory that is not a run, a missing parent."""
    run = Path(run)
    replace = run.exists() and any(run.iterdir())
    if replace:
        if not force:
            raise UsageError(f"{run}: run directory exists ({hint})")
        if not (run / "config.json").is_file():
            raise UsageError(f"{run}: not a minerf run directory; refusing to replace it")
    if not run.parent.exists():
        raise UsageError(f"{run}: directory {run.parent} does not exist")
    return replace


def write_json(path: Path, obj: dict) -> None:
    write_atomically(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def write_config(run: Path, model_cfg: ModelConfig, train_cfg: dict, identities: list[dict], extra: dict | None = None) -> dict:
    """Write RUN/config.json; returns the dict written."""
    cfg = {"format": FORMAT, "version": VERSION, "created_by": f"minerf {__version__}",
           "model": model_cfg.to_dict(), "train": train_cfg, "identities": identities, **(extra or {})}
    write_json(Path(run) / "config.json", cfg)
    return cfg


def read_config(run: Path) -> dict:
    """RUN/config.json, validated (exit code 3 for another format or a newer version)."""
    run = Path(run)
    path = run / "config.json"
    if not run.is_dir():
        raise MinerfError(f"{run}: run directory not found")
    if not path.is_file():
        raise FormatError(f"{run}: not a minerf run (no config.json)")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    if cfg.get("format") != FORMAT:
        raise FormatError(f"{path}: format {cfg.get('format')!r} is not {FORMAT!r}")
    if int(cfg.get("version", 0)) > VERSION:
        raise FormatError(f"{path}: run version {cfg.get('version')} is newer than this minerf "
                          f"understands ({VERSION}); upgrade minerf")
    for key in ("model", "train", "identities"):
        if key not in cfg:
            raise FormatError(f"{path}: missing {key!r}")
    return cfg


def identity_index(cfg: dict, name: str) -> int:
    """Index of identity ``name`` in a run config, or a one-line error listing the known ones."""
    names = [d["name"] for d in cfg["identities"]]
    if name not in names:
        raise UsageError(f"identity {name!r} is not in the run (known: {', '.join(names)})")
    return names.index(name)


def checkpoint_paths(run: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    d = Path(run) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run: Path, step: int, model: MINeRF, optimizer: torch.optim.Optimizer | None,
                    extra: dict | None = None) -> Path:
    """Write RUN/checkpoints/step_<step>.pt atomically and prune old ones (keeps the last 2)."""
    d = Path(run) / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT, "version": VERSION, "step": int(step),
        "frames_per_video": list(model.cfg.frames_per_video),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "rng_cpu": torch.get_rng_state(),
        **(extra or {}),
    }
    if torch.cuda.is_available():
        payload["rng_cuda"] = torch.cuda.get_rng_state_all()
    path = d / f"step_{step:07d}.pt"
    write_atomically(path, lambda p: torch.save(payload, p))
    for old in checkpoint_paths(run)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint dict (tensors and plain values only), validated."""
    return load_tensor_file(path, CHECKPOINT_FORMAT, VERSION, "minerf checkpoint", map_location)


def latest_checkpoint(run: Path) -> Path:
    paths = checkpoint_paths(run)
    if not paths:
        raise MinerfError(f"{run}: the run has no checkpoint yet")
    return paths[-1]


def load_model(run: Path, device: torch.device | str = "cpu", checkpoint: Path | None = None) -> tuple[MINeRF, dict, dict]:
    """Rebuild a run's model from config.json and its latest (or the given) checkpoint.

    Returns (model on device, in eval mode; config dict; checkpoint dict)."""
    cfg = read_config(run)
    ckpt = load_checkpoint(checkpoint or latest_checkpoint(run))
    mcfg = ModelConfig.from_dict(cfg["model"])
    mcfg.frames_per_video = list(ckpt["frames_per_video"])
    model = MINeRF(mcfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise FormatError(f"{run}: checkpoint does not match config.json ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), cfg, ckpt


def identity_codes(run: Path) -> tuple[list[str], torch.Tensor]:
    """Names and (K, d) identity codes of a run's latest checkpoint."""
    cfg = read_config(run)
    ckpt = load_checkpoint(latest_checkpoint(run))
    return [d["name"] for d in cfg["identities"]], ckpt["model"]["identity.table.weight"].float()
