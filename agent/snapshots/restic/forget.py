"""Argv for ``restic forget --json``: apply a retention policy to this host's Helpline snapshots only.

``--host`` and ``--tag helpline`` are always passed, so one PC's retention can
never remove another PC's snapshots or ones a person made by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from protocol.errors import InvalidInputError

from . import values
from .repository import Repository, common_options
from .version import Restic

_WITHIN = re.compile(r"^(\d+y)?(\d+m)?(\d+d)?(\d+h)?$")


@dataclass(frozen=True)
class Retention:
    """How many snapshots to keep per period (restic's ``--keep-*``); None leaves a period out."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    #: Keep every snapshot younger than this restic duration, e.g. ``2d`` or ``1y6m``.
    within: str | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "within":
                if value is not None and (not value or not _WITHIN.match(value)):
                    raise InvalidInputError(f"not a restic duration for keep-within: {value!r}",
                                            hint="write it like 2d, 12h or 1y6m")
            elif value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidInputError(f"keep-{field.name} must be a whole number of at least 1, got {value!r}")
        if all(getattr(self, field.name) is None for field in fields(self)):
            raise InvalidInputError("a retention policy must keep something", hint="set at least one keep-* rule")

    def options(self) -> tuple[str, ...]:
        """Restic's ``--keep-*`` options for this policy, in a fixed order."""
        out: list[str] = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out += [f"--keep-{field.name}", str(value)]
        return tuple(out)


def forget_argv(
    restic: Restic,
    repository: Repository,
    *,
    host: str,
    retention: Retention,
    prune: bool = False,
    retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that forgets ``host``'s Helpline snapshots outside ``retention`` (and prunes, if asked)."""
    argv = [restic.program, "forget", *common_options(restic, repository, retry_lock=retry_lock), "--json",
            "--host", values.word(host, "host name"), "--tag", values.HELPLINE_TAG, *retention.options()]
    if prune:
        argv.append("--prune")
    return tuple(argv)
