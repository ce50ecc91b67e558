"""Errors a user can fix. The command-line scripts turn them into one line and exit code 2."""

from __future__ import annotations

import sys


def one_line(text: object) -> str:
    """Collapse whitespace, so a message built from file contents or server replies stays one line."""
    return " ".join(str(text).split())


class UserError(Exception):
    """Bad input from the user: config, command line or data layout. Printed as one line, exit 2."""

    exit_code = 2


class ConfigError(UserError):
    """The experiment config is malformed or inconsistent."""


class DataError(UserError):
    """Raw data is missing, malformed or failed verification."""


def print_error(error: UserError) -> int:
    """Print a user error as the one ``error: ...`` line the commands show; return its exit code."""
    print(f"error: {error}", file=sys.stderr)
    return error.exit_code


class RunFailed(Exception):
    """A run that started but failed while running (exit 1, recorded in summary.json)."""

    exit_code = 1
