"""Exit statuses of the `helpline` command and the error type that carries them.

Code in agent/ and server/ never prints or exits: it raises :class:`HelplineError`
with the status the CLI should exit with; cli/ turns it into one line and a hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, IntEnum


class ExitStatus(IntEnum):
    """Every exit status `helpline` uses, each with its meaning in one line.

    `helpline --help` lists them from here; README.md's table lists the same codes (tests/cli checks both).
    """

    description: str

    def __new__(cls, value: int, description: str) -> ExitStatus:
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    OK = 0, "done"
    ERROR = 1, "unexpected error (run again with --debug)"
    USAGE = 2, "wrong arguments or options"
    CONFIG = 3, "not set up: not logged in, PC not linked, bad configuration"
    AUTH = 4, "authentication failed"
    FORBIDDEN = 5, "forbidden for your role"
    NOT_FOUND = 6, "not found"
    CONFLICT = 7, "clashes with the current state"
    RATE_LIMITED = 8, "too many attempts; try again later"
    UNAVAILABLE = 9, "server unreachable or not ready"
    INVALID = 10, "invalid input, refused"
    PARTIAL = 11, "partly done (see the report)"
    AMBIGUOUS = 12, "matches more than one; give more of it"
    INTERRUPTED = 130, "interrupted"


class Audience(str, Enum):
    """Who reads a hint, so it names only what that person can do.

    The person at the PC runs the user commands (pair, share, status); an
    engineer also works tickets and diagnostics; an admin can do all of it.
    """

    USER = "user"
    ENGINEER = "engineer"
    ADMIN = "admin"


class HelplineError(Exception):
    """An error that carries the exit status and a hint for the person who hit it.

    ``hint`` suits anyone; ``hints`` gives other wording per :class:`Audience`
    (a user is never told to run an engineer's command, an engineer never an
    admin's), picked with :meth:`hint_for`.
    """

    status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, hint: str | None = None, status: ExitStatus | None = None,
                 hints: Mapping[Audience, str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.hints = dict(hints or {})
        if status is not None:
            self.status = status

    def hint_for(self, audience: Audience | None) -> str | None:
        """The hint for ``audience``: its own wording, an admin the engineer's, else the hint for anyone."""
        if audience is not None:
            if audience in self.hints:
                return self.hints[audience]
            if audience is Audience.ADMIN and Audience.ENGINEER in self.hints:
                return self.hints[Audience.ENGINEER]
        return self.hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class ConfigError(HelplineError):
    status = ExitStatus.CONFIG


class UpgradeRequiredError(ConfigError):
    """One side speaks a protocol version the other no longer (or not yet) serves (HTTP 426): upgrade it (exit 3)."""


class AuthError(HelplineError):
    status = ExitStatus.AUTH


class ForbiddenError(HelplineError):
    status = ExitStatus.FORBIDDEN


class NotFoundError(HelplineError):
    status = ExitStatus.NOT_FOUND


class ConflictError(HelplineError):
    status = ExitStatus.CONFLICT


class AmbiguousError(ConflictError):
    """A short id or a name that matches more than one thing; the message lists the candidates."""

    status = ExitStatus.AMBIGUOUS


class RateLimitedError(HelplineError):
    status = ExitStatus.RATE_LIMITED


class UnavailableError(HelplineError):
    status = ExitStatus.UNAVAILABLE


class QuotaExceededError(RateLimitedError):
    """A PC is over one of its upload quotas (HTTP 429): nothing is lost, the bundle can be sent once room frees."""


class StorageFullError(UnavailableError):
    """The server has no room to take more (HTTP 507): its disk or configured cap is full; nothing stored is lost."""


class InvalidInputError(HelplineError):
    status = ExitStatus.INVALID


class DamagedError(InvalidInputError):
    """Data arrived damaged (a checksum mismatch); sending it again can fix it."""


class TooLargeError(InvalidInputError):
    """The input is over a size limit (HTTP 413)."""


# How errors travel over HTTP, most specific first: (error class, HTTP status, error code).
# The server picks the first row the error is an instance of; clients map back by code, then status.
HTTP_ERRORS: tuple[tuple[type[HelplineError], int, str], ...] = (
    (AuthError, 401, "unauthenticated"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (AmbiguousError, 409, "ambiguous"),
    (ConflictError, 409, "conflict"),
    (QuotaExceededError, 429, "quota_exceeded"),
    (RateLimitedError, 429, "rate_limited"),
    (TooLargeError, 413, "too_large"),
    (DamagedError, 422, "damaged"),
    (InvalidInputError, 422, "invalid"),
    (StorageFullError, 507, "storage_full"),
    (UnavailableError, 503, "unavailable"),
    (UpgradeRequiredError, 426, "upgrade_required"),
)


def http_status_of(error: HelplineError) -> tuple[int, str]:
    """The HTTP status and error code a server answers ``error`` with (500 if unmapped)."""
    for cls, status, code in HTTP_ERRORS:
        if isinstance(error, cls):
            return status, code
    return 500, "internal"


def error_class_for(status: int, code: str | None) -> type[HelplineError]:
    """The error class a client raises for a server's error answer."""
    for cls, _, known in HTTP_ERRORS:
        if code == known:
            return cls
    for cls, known_status, _ in reversed(HTTP_ERRORS):  # by status alone, the most general class
        if status == known_status:
            return cls
    if status in (400, 405, 415):
        return InvalidInputError
    if status in (502, 504):
        return UnavailableError
    return HelplineError
