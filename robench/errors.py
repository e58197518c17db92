"""The error kinds behind every one-line message robench prints.

The CLI turns a :class:`RobenchError` into ``Error: <message>`` and its ``exit_code``: 2 for usage errors (a bad
flag value, an unknown name), 1 for runtime failures (missing data, a corrupt checkpoint, a write that failed).
"""

from __future__ import annotations


class RobenchError(Exception):
    """Base of all errors with a one-line message meant for the user."""

    exit_code = 1


class UsageError(RobenchError, ValueError):
    """A value given by the user is not accepted; the message names it and what is accepted. Also a
    ``ValueError``, so Python callers of :func:`robench.evaluate` can catch it as one."""

    exit_code = 2


class UnknownName(UsageError):
    """A name not in a registry; the message lists the choices."""


class BadSpec(UsageError):
    """A malformed value (eps string, option out of range, inconsistent configuration)."""


class DataNotFound(RobenchError):
    """A dataset could not be found where it was looked for."""


class IntegrityError(RobenchError):
    """A checkpoint, card or results file failed verification (hash, schema, shape)."""


class RankFailed(RobenchError):
    """Another rank died or torchrun stopped this one; finished cells are kept and a rerun resumes."""


class Interrupted(RobenchError):
    """The user interrupted a long run; finished work was kept."""

    exit_code = 130
