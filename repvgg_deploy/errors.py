"""Errors a user can act on: the CLIs print them as one line and exit with code 2."""
from __future__ import annotations

__all__ = ["UserError", "CheckpointError", "DataError", "MissingDependency", "UnknownArchError"]


class UserError(Exception):
    """Bad input (a file, a flag, a name): shown as one line, exit code 2."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(UserError):
    """A data set that cannot be found or read."""


class MissingDependency(UserError):
    """An optional package or a device that this machine does not have."""


class UnknownArchError(UserError, KeyError):
    """An arch name that is not in the registry (a ``KeyError`` too, for dict-like lookups)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
