"""Errors raised for bad user input, with one-line messages meant for the terminal."""

from __future__ import annotations


class BrainVQError(Exception):
    """Base class of errors that the CLI prints as a single line (no traceback)."""


class DataError(BrainVQError, ValueError):
    """Input data is missing, empty, corrupt or inconsistent; the message names the file."""


class CheckpointError(BrainVQError, ValueError):
    """A checkpoint or weights file is missing, corrupt, or from another architecture."""


class ConfigError(BrainVQError, ValueError):
    """An argument or configuration value is out of range."""


class OutputError(BrainVQError, OSError):
    """An output folder cannot be written (a file, under a file, not writable, in use by another
    command, or holding another run's outputs)."""
