"""User-facing errors.

Every problem a user can fix (a wrong config value, a missing or mismatched file, a bad
argument) raises :class:`SlateRLError` with one message that names the problem and the fix.
The command-line entry point prints that message alone, without a traceback.
"""

from __future__ import annotations


class SlateRLError(Exception):
    """An error caused by user input; its message says what is wrong and how to fix it."""


class ConfigError(SlateRLError, ValueError):
    """An invalid configuration key or value."""


class ArtifactError(SlateRLError, ValueError):
    """A missing, corrupted or mismatched input file."""
