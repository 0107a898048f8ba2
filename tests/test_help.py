"""Every registered command documents itself; the top-level CLI behaves (version, usage errors)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from minerf_cli import __version__
from minerf_cli.app import app


def _command_paths() -> list[tuple[str, ...]]:
    def walk(group, path):
        for name, cmd in sorted((getattr(group, "commands", None) or {}).items()):
            if not getattr(cmd, "hidden", False):
                yield path + (name,)
                yield from walk(cmd, path + (name,))

    return list(walk(typer.main.get_command(app), ()))


def minerf_exe() -> list[str]:
    """The installed console script (beside this interpreter), else the module entry point."""
    script = Path(sys.executable).parent / "minerf"
    if script.exists():
        return [str(script)]
    found = shutil.which("minerf")
    return [found] if found else [sys.executable, "-c", "from minerf_cli.app import main; main()"]


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p))
def test_command_help_has_an_example(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`minerf {' '.join(path)} --help` shows no example"


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    assert "Example" in result.output
    for path in _command_paths():
        assert path[0] in result.output


def test_version():
    out = subprocess.run([*minerf_exe(), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"minerf {__version__}"


def test_unknown_command_is_a_usage_error():
    out = subprocess.run([*minerf_exe(), "no-such-command"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 2
    assert out.stdout == ""
    assert "no-such-command" in out.stderr


def test_unknown_option_is_a_usage_error():
    out = subprocess.run([*minerf_exe(), "--no-such-option"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stdout == ""
