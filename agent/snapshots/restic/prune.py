"""Argv for ``restic prune``: remove the data no snapshot refers to any more."""

from __future__ import annotations

from .repository import Repository, common_options
from .version import Restic


def prune_argv(restic: Restic, repository: Repository, *, retry_lock: float | None = None) -> tuple[str, ...]:
    """Return the argv that prunes ``repository``."""
    return (restic.program, "prune", *common_options(restic, repository, retry_lock=retry_lock))
