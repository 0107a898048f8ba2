"""`minerf demo -o DIR`: the whole pipeline on built-in synthetic talking heads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def demo(
    output: Path = typer.Option(..., "--output", "-o", help="Directory for the demo's clips, stores, run, videos and metrics."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]; the demo's size follows the device."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps [default: 300 on the CPU, 3000 on a GPU]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic identities and of training."),
    force: bool = typer.Option(False, "--force", help="Reuse a non-empty output directory, replacing the demo's files."),
) -> None:
    """Synthesize talking heads, then prep -> fit3dmm -> train -> transfer -> evaluate.

    Renders a few synthetic identities with the project's own renderer (no download), trains
    one MI-NeRF for all of them (a fast field, sized for the device: a few minutes on a CPU),
    renders identity 1 with identity 0's expressions (side by side) and identity 1's
    held-out frames, and evaluates both. Prints where the videos and metrics are.

    Example: minerf demo -o demo/ | jq -r .transfer_video
    """
    from minerf_cli.demo import demo as run_demo

    emit_json(run_demo(output, device=device, steps=steps, seed=seed, force=force))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
