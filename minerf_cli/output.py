"""stdout JSON, stderr logs and progress, and the error-to-exit-code wrapper.

Every command prints exactly one JSON object on stdout (or NDJSON, one line per item);
logs, warnings and progress bars go to stderr only.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .errors import MinerfError

T = TypeVar("T")

state = {"debug": False, "quiet": False}


def stderr_console() -> Console:
    """A rich console on the *current* sys.stderr (so test runners can capture it)."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def log(message: str) -> None:
    """An informational line on stderr (suppressed by --quiet)."""
    if not state["quiet"]:
        stderr_console().print(message)


def warn(message: str) -> None:
    """A warning on stderr (always shown)."""
    stderr_console().print(f"[yellow]warning:[/yellow] {escape(message)}")


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy arrays/scalars, tuples and bytes made JSON-serialisable (non-finite floats -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, bytes):  # h5py gives fixed-length string attributes as bytes
        return obj.decode("utf-8", "replace")
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def emit_json(obj: dict) -> None:
    """Write one JSON summary line to stdout."""
    sys.stdout.write(json.dumps(jsonable(obj)) + "\n")
    sys.stdout.flush()


def progress_bar(description: str, total: int | None) -> Progress:
    """A rich progress bar on stderr; disabled under --quiet.

    Use as a context manager: ``with progress_bar("prep", n) as (bar, task): bar.advance(task)``.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=stderr_console(),
        disable=state["quiet"],
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr."""
    with progress_bar(description, total) as bar:
        task = bar.add_task(description, total=total, info="")
        for item in items:
            yield item
            bar.advance(task)


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command body: MinerfError -> one-line message and its exit code.

    Unexpected exceptions print one line too (a traceback only with --debug) and exit 1.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MinerfError as exc:
            if state["debug"]:
                traceback.print_exc(file=sys.stderr)
            stderr_console().print(f"[red]error:[/red] {escape(str(exc))}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            stderr_console().print("[red]error:[/red] interrupted")
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the contract: never a bare traceback
            if state["debug"]:
                traceback.print_exc(file=sys.stderr)
            msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            stderr_console().print(f"[red]error:[/red] internal error: {escape(msg)} (rerun with --debug for a traceback)")
            sys.exit(1)

    return wrapper
