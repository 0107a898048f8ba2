"""Shared fixtures: tiny synthetic talking-head clips rendered by minerf_cli.synth."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_clip(tmp_path_factory) -> dict:
    """One ~1 s, 256x256, 25 fps synthetic talking head with audio (mp4 + wav + ground truth).

    Returns synth.synthesize's dict for the clip: {"video", "audio", "gt", "frames", ...}.
    """
    from minerf_cli.synth import synthesize

    out = Path(tmp_path_factory.mktemp("synth_clip"))
    return synthesize(out, ids=1, seconds=1.0, size=256, fps=25.0, seed=0)[0]
