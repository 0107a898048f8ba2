"""Errors that map onto the exit codes of the command contract.

0 ok; 1 runtime failure; 2 usage error; 3 input of a wrong or newer format.
"""

from __future__ import annotations


class MinerfError(Exception):
    """A failure the user can act on; printed as one line, no traceback."""

    exit_code = 1


class UsageError(MinerfError):
    """Bad arguments or an output that exists without --force."""

    exit_code = 2


class FormatError(MinerfError):
    """An input of a wrong, unknown or newer format (e.g. a store from another version)."""

    exit_code = 3
