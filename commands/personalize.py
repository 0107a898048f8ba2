"""`minerf personalize RUN --id NAME --store STORE.h5`: fine-tune for one (new or known) identity."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from minerf_cli.output import command, emit_json


@command
def personalize(
    run: Path = typer.Argument(..., help="A run directory written by `minerf train`."),
    name: str = typer.Option(..., "--id", help="Identity to personalize: a name in the run, or a new one for an unseen person."),
    store: Path = typer.Option(..., "--store", help="Tracked store of that person (for a new person 1-3 s is enough)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="New run directory [default: update RUN in place, needs --force]."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Fine-tuning steps."),
    lr: float = typer.Option(1e-5, "--lr", help="Learning rate of the network (the paper's 1e-5); the conditioning module is frozen."),
    code_lr: float = typer.Option(5e-4, "--code-lr", help="Learning rate of a new person's identity and latent codes."),
    replay: float = typer.Option(0.5, "--replay", min=0.0, max=0.99, help="Share of steps on the run's other identities (keeps them from being forgotten)."),
    rays: int = typer.Option(2048, "--rays", min=16, help="Rays per step."),
    test_frames: int = typer.Option(-1, "--test-frames", help="Held-out frames rendered for the final PSNR (-1: all)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA), bf16, tf32 or fp32."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    force: bool = typer.Option(False, "--force", help="Update RUN in place (without -o) or replace an existing -o."),
) -> None:
    """Fine-tune a run for one identity, or add an unseen person from a short clip.

    A known identity is fine-tuned at a small learning rate with the multiplicative module
    frozen (MI-NeRF sec. 3.4). An unseen person gets a new identity code and latent codes,
    learned together with the same fine-tuning; part of the steps replay the other
    identities, whose held-out PSNR is reported before and after.

    Example: minerf personalize runs/multi --id carol --store stores/carol_3s.h5 -o runs/multi+carol
    """
    from minerf_cli.personalize import personalize as run_personalize

    emit_json(run_personalize(run, name, store, output=output, steps=steps, lr=lr, code_lr=code_lr, replay=replay,
                              rays=rays, test_frames=test_frames, device=device, precision=precision, seed=seed,
                              force=force))


def register(app: typer.Typer) -> None:
    app.command("personalize")(personalize)
