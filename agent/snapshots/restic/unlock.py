"""Argv for ``restic unlock``: remove the locks restic deems stale (never ``--remove-all``).

Restic deems a lock stale when it is older than 30 minutes, or when it was
made on this host by a process that is gone; the runner only calls this after
it has checked that every such lock is one of this host's.
"""

from __future__ import annotations

from .repository import Repository, common_options
from .version import Restic


def unlock_argv(restic: Restic, repository: Repository) -> tuple[str, ...]:
    """Return the argv that removes ``repository``'s stale locks."""
    return (restic.program, "unlock", *common_options(restic, repository))
