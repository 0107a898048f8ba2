"""A trained audio model on disk (`minerf encode-audio --fit`): :class:`AudioBundle`.

Layout of a model directory::

    DIR/config.json   format "minerf-audio-model", version 1: audio features (mel and window
                      settings), model architecture, the mouth/jaw blendshape names and their
                      indices into the 53 ICT expressions, landmark settings, training summary
    DIR/weights.pt    state dicts and normalisation tensors only (torch.load weights_only=True)

Both files are written to a temporary name and renamed (atomic). A directory of another
format, a newer version, or unreadable / mismatching weights is a FormatError (exit 3).

Three models (JEAN sec. 3.1, suppl. 8.1-8.2; LipNeRF's audio-to-expression route):

* the landmark autoencoder (:class:`.autoencoder.LandmarkAutoencoder`) on JEAN's 51 points
  (2-D, normalised by the eye midpoint and inter-ocular distance, de-rolled, then
  standardised per column with training statistics); its 64-d mouth embedding e_m is
  :meth:`AudioBundle.mouth_embedding`;
* the audio encoder (:class:`.audio_encoder.AudioEncoder`) trained with InfoNCE (tau 0.1)
  against the frozen mouth embeddings: :meth:`AudioBundle.audio_embedding`;
* the audio-to-expression model: "conv" (an AudioEncoder-shaped conv net over the log-mel
  window with one output per mouth blendshape) or "head" (a 2-layer MLP on the frozen audio
  embedding): :meth:`AudioBundle.predict_expressions`, weights in [0, 1]; new models predict
  the deviation from the speaker's mean pose ("target": "residual") and add the mean of the
  identity asked for (config "expression_means", keyed by training store stem) or the global
  training mean; older models ("absolute") have sigmoid outputs.

Audio windows: unlike `minerf encode-audio STORE` (a window of ``window_frames`` video frames,
so T depends on the frame rate), the bundle's windows span a fixed ``window_seconds``
(0.32 s = 8 frames at 25 fps; 0.64 s for models made before the per-clip normalisation) whatever
the fps: T = 2 * round(window_seconds / 2 / 0.01) + 1
= 33 mel steps (65 for 0.64 s), centred on each video frame's instant n / fps (:mod:`minerf_cli.audio_windows`),
so clips of any frame rate share one model. Always build windows with :meth:`AudioBundle.windows`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..errors import FormatError, MinerfError, UsageError
from ..fsutil import load_tensor_file, write_atomically
from ..output import jsonable
from .audio_encoder import AudioEncoder
from .energy import DEFAULT_BETA, ENERGY_BANDS, ENERGY_HALF_STEPS, blend_energy, energy_envelope
from .autoencoder import LandmarkAutoencoder
from .landmarks68 import landmark_vectors
from .losses import sync_scores

FORMAT = "minerf-audio-model"
VERSION = 1
WEIGHTS_FORMAT = "minerf-audio-weights"
DEFAULT_WINDOW_SECONDS = 0.32  # 0.64 until the per-clip normalised models (held-out real clips: better)
DEFAULT_SMOOTH_SIGMA = 1.0  # frames (2 frames: whole unseen real clips +0.02, synthetic held-out jawOpen 0.92 -> 0.79)
MEL_NORM_MIN_STD = 0.5  # floor of the per-band std (ln units) of per-clip mel normalisation
BATCH = 1024


class ExpressionHead(nn.Module):
    """The "head" audio-to-expression model: audio embedding (B, 64) -> (B, M) logits."""

    def __init__(self, n_out: int, emb_dim: int = 64, hidden: int = 128, slope: float = 0.02):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(emb_dim, hidden), nn.LeakyReLU(slope), nn.Linear(hidden, n_out))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb)


def default_config(mouth_names: list[str], mouth_indices: list[int], window_seconds: float = DEFAULT_WINDOW_SECONDS,
                   expression_model: str = "conv", smooth_sigma: float = DEFAULT_SMOOTH_SIGMA,
                   mel_norm: str | None = "clip", target: str = "residual", sync_centre: bool = True,
                   energy_beta: float = DEFAULT_BETA) -> dict:
    from .. import mel

    half = max(1, int(round(window_seconds / 2.0 / mel.HOP_S)))
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_by": f"minerf {__version__}",
        "features": {
            "kind": mel.KIND, "sample_rate": mel.SAMPLE_RATE, "n_fft": mel.N_FFT, "win_length": mel.WIN_LENGTH,
            "hop_s": mel.HOP_S, "n_mels": mel.N_MELS, "fmin": mel.FMIN, "fmax": mel.FMAX, "mel_scale": "slaney",
            "log": f"ln(mel_power + {mel.LOG_EPS:g})",
            "window_seconds": float(window_seconds),
            "window_frames": int(round(window_seconds * 25.0)),  # the window in frames at 25 fps
            "window_steps": 2 * half + 1,
            "centre": "step window_steps // 2 of frame n is the time n / fps",
            # "clip": every mel band standardised over the whole audio given to windows()
            # (removes loudness / channel differences between recordings); None: raw log-mel
            "mel_norm": mel_norm,
            "mel_norm_min_std": MEL_NORM_MIN_STD,
        },
        "landmarks": {"points": 51, "dims": 2, "deroll": True, "source": "mediapipe 478 -> 68 -> 51 (JEAN)"},
        "mouth_names": list(mouth_names),
        "mouth_indices": [int(i) for i in mouth_indices],
        "models": {
            "autoencoder": {"dims": 2, "emb_dim": 64, "hidden": [256, 256, 128]},
            "audio_encoder": {"emb_dim": 64, "channels": [64, 64, 128, 128], "hidden": 128,
                              "sync_centre": bool(sync_centre)},
            # target "residual": the model predicts the deviation from the speaker's mean pose;
            # predict_expressions adds the mean of an identity (expression_means) or the global one
            "expression": {"kind": expression_model, "channels": [64, 64, 128, 128], "hidden": 128,
                           "smooth_sigma_frames": float(smooth_sigma), "target": target,
                           # jawOpen += beta * its spread * the clip-standardised speech energy
                           # (energy.py); older models have no key: no blend
                           "energy_blend": {"output": "jawOpen", "beta": float(energy_beta),
                                            "bands": list(ENERGY_BANDS), "half_steps": ENERGY_HALF_STEPS}},
        },
        "expression_means": {"global": None, "identities": {}},
        "training": {},
    }


class AudioBundle:
    """The trained audio models and their settings (see the module docstring)."""

    def __init__(self, config: dict, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        models = config["models"]
        ae = models["autoencoder"]
        self.autoencoder = LandmarkAutoencoder(dims=int(ae["dims"]), hidden=tuple(ae["hidden"]),
                                               emb_dim=int(ae["emb_dim"]))
        n_cols = 51 * int(ae["dims"])
        self.landmark_mean = torch.zeros(n_cols)
        self.landmark_std = torch.ones(n_cols)
        enc = models["audio_encoder"]
        self.audio_encoder = AudioEncoder(emb_dim=int(enc["emb_dim"]), channels=tuple(enc["channels"]),
                                          hidden=int(enc["hidden"]))
        ex = models["expression"]
        n_out = len(config["mouth_names"])
        if ex["kind"] == "conv":
            self.expression: nn.Module = AudioEncoder(emb_dim=n_out, channels=tuple(ex["channels"]),
                                                      hidden=int(ex["hidden"]))
        elif ex["kind"] == "head":
            self.expression = ExpressionHead(n_out, emb_dim=int(enc["emb_dim"]), hidden=int(ex["hidden"]))
        else:
            raise FormatError(f"unknown expression model kind {ex['kind']!r}")
        self.to(self.device)

    # ------------------------------------------------------------------ settings
    @property
    def window_frames(self) -> int:
        """The window length in video frames at 25 fps (it spans :attr:`window_seconds` at any fps)."""
        return int(self.config["features"]["window_frames"])

    @property
    def window_seconds(self) -> float:
        return float(self.config["features"]["window_seconds"])

    @property
    def window_steps(self) -> int:
        """T: mel steps per window (33 by default, 65 for older 0.64 s models; the same at every frame rate)."""
        return int(self.config["features"]["window_steps"])

    @property
    def mouth_names(self) -> list[str]:
        return list(self.config["mouth_names"])

    @property
    def mouth_indices(self) -> list[int]:
        return [int(i) for i in self.config["mouth_indices"]]

    @property
    def training(self) -> dict:
        return self.config.get("training", {})

    def to(self, device) -> "AudioBundle":
        self.device = torch.device(device)
        for m in (self.autoencoder, self.audio_encoder, self.expression):
            m.to(self.device)
        self.landmark_mean = self.landmark_mean.to(self.device)
        self.landmark_std = self.landmark_std.to(self.device)
        return self

    def eval(self) -> "AudioBundle":
        for m in (self.autoencoder, self.audio_encoder, self.expression):
            m.eval()
        return self

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict:
        return {"format": WEIGHTS_FORMAT, "version": VERSION,
                "autoencoder": self.autoencoder.state_dict(), "audio_encoder": self.audio_encoder.state_dict(),
                "expression": self.expression.state_dict(),
                "landmark_mean": self.landmark_mean.detach().cpu(), "landmark_std": self.landmark_std.detach().cpu()}

    def save(self, path: Path, force: bool = False) -> Path:
        """Write DIR/config.json and DIR/weights.pt (each atomically). An existing non-empty
        directory needs ``force``."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not force:
            raise UsageError(f"{path}: exists and is not empty (use --force to replace the audio model)")
        path.mkdir(parents=True, exist_ok=True)
        state = {k: ({kk: vv.detach().cpu() for kk, vv in v.items()} if isinstance(v, dict) else v)
                 for k, v in self.state().items()}
        write_atomically(path / "weights.pt", lambda p: torch.save(state, p))
        text = json.dumps(jsonable(self.config), indent=2) + "\n"
        write_atomically(path / "config.json", lambda p: p.write_text(text))
        return path

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> "AudioBundle":
        """Read a model directory (FormatError, exit 3, for a wrong or newer format)."""
        path = Path(path)
        if not path.exists():
            raise MinerfError(f"{path}: audio model directory not found")
        cfg_path = path / "config.json"
        if not path.is_dir() or not cfg_path.is_file():
            raise FormatError(f"{path}: not a minerf audio model (no config.json)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{cfg_path}: not valid JSON ({exc})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            fmt = cfg.get("format") if isinstance(cfg, dict) else None
            raise FormatError(f"{cfg_path}: format {fmt!r} is not {FORMAT!r}")
        try:
            version = int(cfg.get("version", 0))
        except (TypeError, ValueError):
            raise FormatError(f"{cfg_path}: bad version {cfg.get('version')!r}") from None
        if version > VERSION:
            raise FormatError(f"{cfg_path}: audio model version {version} is newer than this minerf "
                              f"understands ({VERSION}); upgrade minerf")
        for key in ("features", "models", "mouth_names", "mouth_indices"):
            if key not in cfg:
                raise FormatError(f"{cfg_path}: missing {key!r}")
        wpath = path / "weights.pt"
        if not wpath.is_file():
            raise FormatError(f"{path}: no weights.pt")
        w = load_tensor_file(wpath, WEIGHTS_FORMAT, VERSION, "minerf audio model weights file")
        try:
            b = cls(cfg, "cpu")
            b.autoencoder.load_state_dict(w["autoencoder"])
            b.audio_encoder.load_state_dict(w["audio_encoder"])
            b.expression.load_state_dict(w["expression"])
            b.landmark_mean = w["landmark_mean"].float()
            b.landmark_std = w["landmark_std"].float()
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: weights.pt does not match config.json "
                              f"({(str(exc).splitlines() or [''])[0]})") from None
        return b.to(device).eval()

    # ------------------------------------------------------------------ features
    def windows(self, pcm16k: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
        """16 kHz mono audio -> (N, T, 80) float32 log-mel windows, window n centred on n / fps.

        N = ``n_frames`` or, by default, the whole video frames in the audio (floor(S / 16000 * fps));
        steps beyond the audio hold silence."""
        from ..audio import frame_count
        from ..audio_windows import frame_windows
        from ..mel import HOP_S, SAMPLE_RATE, logmel

        pcm = np.asarray(pcm16k, np.float32).reshape(-1)
        fps = float(fps)
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive (got {fps})")
        n = frame_count(len(pcm), SAMPLE_RATE, fps) if n_frames is None else int(n_frames)
        mel = logmel(pcm)
        out = frame_windows(mel, fps, 0, n, window_frames=self.window_seconds * fps, hop_s=HOP_S)
        assert out.shape[1] == self.window_steps, (out.shape, self.window_steps)
        if self.config["features"].get("mel_norm") == "clip" and len(mel):
            # after windowing (linear in the rows), so the silence padding is normalised alike
            mu = mel.mean(0)
            sd = np.maximum(mel.std(0), float(self.config["features"].get("mel_norm_min_std", MEL_NORM_MIN_STD)))
            out = ((out - mu) / sd).astype(np.float32)
        return out

    def _check_windows(self, windows) -> torch.Tensor:
        w = torch.as_tensor(np.asarray(windows, np.float32))
        if w.ndim != 3 or w.shape[1] != self.window_steps or w.shape[2] != 80:
            raise ValueError(f"expected (N, {self.window_steps}, 80) windows from AudioBundle.windows(), "
                             f"got shape {tuple(w.shape)}")
        return w

    @torch.no_grad()
    def _batched(self, fn, x: torch.Tensor) -> np.ndarray:
        outs = [fn(x[a:a + BATCH].to(self.device)).float().cpu() for a in range(0, len(x), BATCH)]
        return torch.cat(outs).numpy() if outs else np.zeros((0,), np.float32)

    def audio_embedding(self, windows: np.ndarray) -> np.ndarray:
        """(N, T, 80) windows -> (N, 64) InfoNCE audio embeddings (float32)."""
        w = self._check_windows(windows)
        self.audio_encoder.eval()
        out = self._batched(self.audio_encoder, w)
        return out.reshape(len(w), self.audio_encoder.emb_dim).astype(np.float32)

    def landmark_vectors(self, landmarks478: np.ndarray) -> np.ndarray:
        """(N, 478, 3) mediapipe landmarks -> (N, 102) standardised autoencoder inputs (NaN rows
        where a frame has no / non-finite landmarks)."""
        lm = np.asarray(landmarks478, np.float32)
        if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] < 2:
            raise ValueError(f"expected (N, 478, 3) landmarks, got shape {lm.shape}")
        lcfg = self.config["landmarks"]
        with np.errstate(invalid="ignore", divide="ignore"):
            v = landmark_vectors(lm, dims=int(lcfg["dims"]), deroll=bool(lcfg["deroll"]))
        v = (v - self.landmark_mean.cpu().numpy()) / self.landmark_std.cpu().numpy()
        v[~np.isfinite(v).all(1)] = np.nan
        return v.astype(np.float32)

    def mouth_embedding(self, landmarks478: np.ndarray) -> np.ndarray:
        """(N, 478, 3) mediapipe landmarks -> (N, 64) mouth embeddings e_m; NaN rows for invalid frames."""
        v = self.landmark_vectors(landmarks478)
        ok = np.isfinite(v).all(1)
        out = np.full((len(v), self.autoencoder.emb_dim), np.nan, np.float32)
        if ok.any():
            self.autoencoder.eval()
            out[ok] = self._batched(self.autoencoder.encode_mouth, torch.from_numpy(v[ok]))
        return out

    def expression_logits(self, w: torch.Tensor) -> torch.Tensor:
        """(B, T, 80) tensor -> (B, M) logits (differentiable; training uses it)."""
        if self.config["models"]["expression"]["kind"] == "head":
            with torch.no_grad():
                emb = self.audio_encoder(w)
            return self.expression(emb)
        return self.expression(w)

    @property
    def residual(self) -> bool:
        """True when the expression model predicts deviations from the speaker's mean pose."""
        return self.config["models"]["expression"].get("target", "absolute") == "residual"

    @property
    def identity_names(self) -> list[str]:
        """Identities (store stems, and identity names given to the fit) with a stored mean pose."""
        return sorted((self.config.get("expression_means") or {}).get("identities", {}))

    def expression_mean(self, identity: str | None = None) -> np.ndarray:
        """(M,) mean mouth pose of ``identity`` (training part of its clips) or, for None, the
        mean over all training frames (zeros for a model that predicts absolute weights)."""
        m = len(self.mouth_names)
        if not self.residual:
            return np.zeros(m, np.float32)
        means = self.config.get("expression_means") or {}
        if identity is None:
            g = means.get("global")
            return np.zeros(m, np.float32) if g is None else np.asarray(g, np.float32)
        ids = means.get("identities", {})
        if identity not in ids:
            raise UsageError(f"identity {identity!r} has no mean pose in this audio model "
                             f"(known: {', '.join(sorted(ids)) or 'none'})")
        return np.asarray(ids[identity], np.float32)

    def predict_expressions(self, windows: np.ndarray, smooth: bool = True, identity: str | None = None,
                            mean: np.ndarray | None = None, energy: bool = True) -> np.ndarray:
        """(N, T, 80) windows -> (N, M) mouth/jaw blendshape weights in [0, 1], columns in
        :attr:`mouth_names` order (their indices into the 53 ICT expressions: :attr:`mouth_indices`).

        A "residual" model predicts the deviation from the speaker's mean pose; the output is made
        absolute by adding ``mean`` (M,) if given, else the stored mean of ``identity`` (a
        training store's stem or identity name, :attr:`identity_names`), else the global training
        mean. An "absolute" model (older bundles) ignores ``identity`` / ``mean``.

        With ``smooth`` the windows are taken as consecutive frames of one clip and each column
        is smoothed over time with a Gaussian of sigma ``smooth_sigma_frames`` (1 frame; edges
        repeat the end values), which removes frame-to-frame jitter of the per-window model.

        With ``energy`` (and a model whose config has "energy_blend", i.e. new models) the windows
        are also taken as one clip, and the speech-energy envelope of the windows
        (:func:`.energy.energy_envelope`, standardised over them) is added to the jawOpen column
        at ``beta`` (0.25 by default) times that column's spread over the windows (:func:`.energy.blend_energy`),
        after the smoothing."""
        w = self._check_windows(windows)
        self.audio_encoder.eval()
        self.expression.eval()
        if self.residual:
            out = self._batched(self.expression_logits, w).reshape(len(w), len(self.mouth_names))
            base = self.expression_mean(identity) if mean is None else np.asarray(mean, np.float32).reshape(-1)
            out = (out + base).astype(np.float32)
        else:
            out = self._batched(lambda x: torch.sigmoid(self.expression_logits(x)), w)
            out = out.reshape(len(w), len(self.mouth_names)).astype(np.float32)
        sigma = float(self.config["models"]["expression"].get("smooth_sigma_frames", DEFAULT_SMOOTH_SIGMA))
        if smooth and sigma > 0 and len(out) > 1:
            from scipy.ndimage import gaussian_filter1d

            out = gaussian_filter1d(out, sigma, axis=0, mode="nearest")
        eb = self.config["models"]["expression"].get("energy_blend")
        if energy and eb and float(eb.get("beta", 0.0)) != 0.0 and eb.get("output") in self.mouth_names:
            j = self.mouth_names.index(eb["output"])
            env = energy_envelope(w.numpy(), tuple(eb.get("bands", ENERGY_BANDS)),
                                  int(eb.get("half_steps", ENERGY_HALF_STEPS)))
            out = out.copy()
            out[:, j] = blend_energy(out[:, j], env, float(eb["beta"]))
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def sync_embeddings(self, audio_emb: np.ndarray, mouth_emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (T, 64) audio and mouth embeddings that :meth:`sync` compares: with "sync_centre"
        (new models) each has its mean over the clip's valid frames removed (what is left is the
        speech dynamics, not who speaks); frames without landmarks -> zero mouth rows."""
        a = np.asarray(audio_emb, np.float32)
        m = np.asarray(mouth_emb, np.float32)
        ok = np.isfinite(m).all(1)
        if self.config["models"]["audio_encoder"].get("sync_centre", False) and ok.any():
            a = a - a[ok].mean(0)
            m = m - m[ok].mean(0)
        return a.astype(np.float32), np.where(ok[:, None], m, 0.0).astype(np.float32)

    def sync(self, pcm16k: np.ndarray, fps: float, landmarks478: np.ndarray, max_offset: int = 15) -> dict:
        """Audio-visual synchronisation of one clip (SyncNet-style, :func:`.losses.sync_scores`).

        The audio windows of the N = len(landmarks478) frames are compared with the mouth
        embeddings at offsets -K..K frames (K = max_offset). Convention: ``offset`` > 0 means the
        video lags the audio by that many frames (the mouth at frame t + offset matches the
        audio at frame t); to realign, shift the audio later by ``offset`` frames (or the video
        earlier). ``confidence`` = median(1 - cos) - min(1 - cos) over offsets: near 0 for
        unrelated audio and video. Frames without landmarks contribute similarity 0."""
        lm = np.asarray(landmarks478, np.float32)
        n = len(lm)
        a = self.audio_embedding(self.windows(pcm16k, fps, n_frames=n))
        m = self.mouth_embedding(lm)
        ok = np.isfinite(m).all(1)
        if not ok.any():
            raise MinerfError("no frame has valid face landmarks: cannot measure audio-visual sync")
        a, m = self.sync_embeddings(a, m)
        res = sync_scores(torch.from_numpy(a), torch.from_numpy(m), max_offset=max_offset)
        return {"offset": int(res.best_offset), "confidence": float(res.confidence),
                "offsets": res.offsets.tolist(), "similarity": [float(s) for s in res.similarity],
                "frames": int(n), "valid_frames": int(ok.sum()),
                "convention": "offset > 0: the video lags the audio by offset frames"}

