"""`minerf encode-audio`: per-video-frame log-mel windows, into a store or a small feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def encode_audio(
    sources: list[Path] = typer.Argument(..., metavar="SOURCE...",
                                         help="A store written by `minerf prep` (gets /audio_features), or a bare "
                                              "audio file (wav, flac, mp3, m4a, the audio of an mp4, ...) with --fps "
                                              "and -o; with --fit: the tracked stores with audio to train on."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="For a bare audio file: the new feature store "
                                                                       "(/audio and /audio_features only); with "
                                                                       "--fit: the audio model directory."),
    fps: Optional[float] = typer.Option(None, "--fps", help="For a bare audio file: the video frame rate the features "
                                                            "are for (a store's rate comes from /frames)."),
    window_frames: int = typer.Option(16, "--window-frames", help="Window length in video frames (1-256), centred "
                                                                  "on each frame."),
    allow_silence: bool = typer.Option(False, "--allow-silence", help="Encode all-silent audio instead of refusing it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing /audio_features group, output file or "
                                                      "audio model directory."),
    fit: bool = typer.Option(False, "--fit", help="Train the audio model (landmark autoencoder, InfoNCE audio encoder, "
                                                  "audio-to-expression) on the given tracked stores into -o DIR."),
    steps: int = typer.Option(1000, "--steps", min=1, help="With --fit: optimiser steps of each of the three models."),
    device: str = typer.Option("cpu", "--device", help="With --fit: torch device (cpu, cuda, cuda:1, ...)."),
    seed: int = typer.Option(0, "--seed", help="With --fit: random seed."),
    model: Optional[Path] = typer.Option(None, "--model", help="With a tracked store: measure its audio-visual sync "
                                                               "with this trained audio model (writes nothing)."),
) -> None:
    """Compute per-frame audio features: for every video frame n, the window of log-mel frames centred on n / fps.

    Features: 80-band log-mel (16 kHz, 25 ms Hann window, 10 ms hop, Slaney mel 0-8 kHz,
    ln(power + 1e-6)); each frame gets a (T, 80) window spanning --window-frames video frames
    (T = 65 at 25 fps, 55 at 30 fps), padded with silence at the clip ends. A store gets
    /audio_features/features (N, T, 80) from its /audio/pcm; a bare audio file (any rate,
    channels or format; resampled to 16 kHz mono) becomes a small store with only /audio and
    /audio_features. Silent audio is refused unless --allow-silence; clipping is a warning.

    With --fit STORES... -o DIR: train the audio model on tracked stores with audio (the last
    10% of every clip held out): JEAN's landmark autoencoder (mouth swap, L1), an audio encoder
    aligned to its mouth embedding with InfoNCE (tau 0.1), and an audio-to-expression model
    for the mouth/jaw blendshapes; prints held-out correlations, InfoNCE accuracy and sync
    offsets. See docs/audio.md.

    Example: minerf encode-audio talk.h5 && minerf encode-audio dub.wav --fps 25 -o dub_feats.h5
    && minerf encode-audio --fit stores/*.h5 -o audio_model/
    """
    import h5py

    from minerf_cli.audio import encode_file, encode_store
    from minerf_cli.errors import MinerfError, UsageError

    if fit:
        if output is None:
            raise UsageError("--fit needs -o DIR (the audio model directory to write)")
        if fps is not None:
            raise UsageError("--fps is not used with --fit (each store's frame rate comes from /frames)")
        from minerf_cli.audio_model.train import fit_audio_model
        from minerf_cli.devices import resolve_device

        for s in sources:
            if not s.exists():
                raise MinerfError(f"{s}: store not found")
        emit_json(fit_audio_model(sources, output, steps=steps, device=str(resolve_device(device)), seed=seed,
                                  force=force))
        return
    if len(sources) != 1:
        raise UsageError(f"one SOURCE at a time (got {len(sources)}); several stores only with --fit")
    source = sources[0]
    if model is not None:
        from minerf_cli import store as storemod
        from minerf_cli.audio_model.bundle import AudioBundle

        bundle = AudioBundle.load(model)
        with storemod.open_store(source, require=("frames", "landmarks")) as f:
            if "audio" not in f:
                raise MinerfError(f"{source}: the store has no /audio (the clip had no audio track)")
            fps = float(f["frames"].attrs["fps"])
            pcm = f["audio/pcm"][()].astype("float32")
            lm = f["landmarks/points"][()]
        res = bundle.sync(pcm, fps, lm)
        emit_json({"store": str(source), "model": str(model), "fps": fps, **res})
        return

    if source.exists() and source.is_file() and h5py.is_hdf5(source):
        if output is not None:
            raise UsageError(f"{source}: -o is for bare audio files; a store gets /audio_features in place")
        if fps is not None:
            raise UsageError(f"{source}: --fps is for bare audio files; a store's frame rate comes from /frames")
        emit_json(encode_store(source, window_frames=window_frames, force=force, allow_silence=allow_silence))
        return
    if not source.exists():
        raise MinerfError(f"{source}: input not found")
    if output is None:
        raise UsageError(f"{source}: a bare audio file needs -o OUT.h5 (and --fps)")
    emit_json(encode_file(source, output, fps, window_frames=window_frames, force=force, allow_silence=allow_silence))


def register(app: typer.Typer) -> None:
    app.command("encode-audio")(encode_audio)
