"""`minerf info STORE`: validate a store and print its layout as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from minerf_cli.output import command, emit_json
from minerf_cli.store import describe


@command
def info(
    store: Path = typer.Argument(..., help="A store written by `minerf prep`."),
) -> None:
    """Validate a store and print its nodes, shapes and attributes as JSON.

    Example: minerf info clip.h5 | jq '.nodes | keys'
    """
    emit_json(describe(store))


def register(app: typer.Typer) -> None:
    app.command("info")(info)
