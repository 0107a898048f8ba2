"""The Typer application: global options and the registered commands."""

from __future__ import annotations

import typer

from . import __version__
from .output import state

app = typer.Typer(
    name="minerf",
    help=(
        "One dynamic NeRF for many talking-face identities.\n\n"
        "Composable commands: inputs and outputs are paths on argv, one JSON summary on "
        "stdout, logs and progress on stderr. Exit codes: 0 ok, 1 runtime failure, "
        "2 usage error, 3 input of a wrong or newer format.\n\n"
        "Example: minerf prep talk.mp4 -o talk.h5 && minerf fit3dmm talk.h5"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"minerf {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or info logs on stderr."),
) -> None:
    state["debug"] = debug
    state["quiet"] = quiet


# Each name is a module in commands/ (installed as minerf_cli.commands) with a
# ``register(app)`` function. Only commands that work are listed.
COMMANDS = ["synth", "prep", "fit3dmm", "encode-audio", "info", "train", "personalize", "transfer", "repack", "evaluate", "lipsync", "demo"]


def _register() -> None:
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"minerf_cli.commands.{name.replace('-', '_')}").register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
