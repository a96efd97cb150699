"""The errors a restic run ends in, each with the exit status and hint a person needs.

Every one is a :class:`~agent.execute.CommandError` (the masked command, its
exit code and the tail of restic's stderr ride along) and also the protocol
error of its kind, so the CLI's funnel and the HTTP table treat a missing
repository as NOT_FOUND, a wrong password as AUTH and a lock as CONFLICT.
"""

from __future__ import annotations

from protocol.errors import AuthError, ConflictError, ExitStatus, NotFoundError

from ...execute import CommandError


class ResticError(CommandError):
    """Restic failed; the message is one line, the stderr tail is in :attr:`stderr_tail`."""


class RepositoryMissing(ResticError, NotFoundError):
    """There is no restic repository at the location (restic 0.17: exit 10)."""


class WrongPassword(ResticError, AuthError):
    """The password file does not open the repository (restic 0.17: exit 12)."""


class RepositoryLocked(ResticError, ConflictError):
    """Another restic run holds a lock that this one cannot share (restic 0.17: exit 11)."""


class RepositoryDamaged(ResticError):
    """``restic check`` found errors in the repository."""


class ResticCancelled(ResticError):
    """The run was cancelled and restic stopped (with SIGINT, so it removed its own lock)."""

    status = ExitStatus.INTERRUPTED
