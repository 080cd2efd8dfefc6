"""User-facing errors: one line that says where the problem is and how to fix it.

Every error a user can cause (bad config, bad data, missing model) is raised as a
`TunesmithError`; the CLI prints its message on one line and exits non-zero without a
traceback. Library callers catch it like any exception.
"""

from __future__ import annotations

from dataclasses import dataclass


class TunesmithError(Exception):
    """An error caused by the user's input; `str(err)` is the one-line message."""

    exit_code = 2


class ConfigError(TunesmithError):
    """A config file or `--set` override is invalid."""


class ModelNotFoundError(TunesmithError):
    """A model name or path does not resolve to anything on disk."""


@dataclass(frozen=True)
class Problem:
    """One invalid record: rendered as `file:line: field: message (fix)`."""

    file: str
    line: int | None
    field: str | None
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        field = f" {self.field}:" if self.field else ""
        fix = f" ({self.fix})" if self.fix else ""
        return f"{where}:{field} {self.message}{fix}"


class DataError(TunesmithError):
    """A dataset has invalid records; `problems` lists every one of them."""

    exit_code = 1

    def __init__(self, problems: list[Problem], summary: str | None = None):
        self.problems = list(problems)
        first = str(self.problems[0]) if self.problems else (summary or "invalid data")
        more = len(self.problems) - 1
        msg = first if more <= 0 else f"{first} (and {more} more problem(s); run `tunesmith data check` to list them)"
        super().__init__(summary or msg)
