"""`minerf encode-audio`: per-video-frame log-mel windows, into a store or a small feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def encode_audio(
    source: Path = typer.Argument(..., help="A store written by `minerf prep` (gets /audio_features), or a bare "
                                            "audio file (wav, flac, mp3, m4a, the audio of an mp4, ...) with --fps and -o."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="For a bare audio file: the new feature store "
                                                                       "(/audio and /audio_features only)."),
    fps: Optional[float] = typer.Option(None, "--fps", help="For a bare audio file: the video frame rate the features "
                                                            "are for (a store's rate comes from /frames)."),
    window_frames: int = typer.Option(16, "--window-frames", help="Window length in video frames (1-256), centred "
                                                                  "on each frame."),
    allow_silence: bool = typer.Option(False, "--allow-silence", help="Encode all-silent audio instead of refusing it."),
    force: bool = typer.Option(False, "--force", help="Replace an existing /audio_features group or output file."),
) -> None:
    """Compute per-frame audio features: for every video frame n, the window of log-mel frames centred on n / fps.

    Features: 80-band log-mel (16 kHz, 25 ms Hann window, 10 ms hop, Slaney mel 0-8 kHz,
    ln(power + 1e-6)); each frame gets a (T, 80) window spanning --window-frames video frames
    (T = 65 at 25 fps, 55 at 30 fps), padded with silence at the clip ends. A store gets
    /audio_features/features (N, T, 80) from its /audio/pcm; a bare audio file (any rate,
    channels or format; resampled to 16 kHz mono) becomes a small store with only /audio and
    /audio_features. Silent audio is refused unless --allow-silence; clipping is a warning.

    Example: minerf encode-audio talk.h5 && minerf encode-audio dub.wav --fps 25 -o dub_feats.h5
    """
    import h5py

    from minerf_cli.audio import encode_file, encode_store
    from minerf_cli.errors import MinerfError, UsageError

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
