"""Argv for ``restic cat``: the repository's config (does a repository exist here?) and one lock's content."""

from __future__ import annotations

from . import values
from .repository import Repository, common_options
from .version import Restic


def cat_config_argv(restic: Restic, repository: Repository) -> tuple[str, ...]:
    """Return the argv that prints ``repository``'s config: it succeeds only where a repository opens."""
    return (restic.program, "cat", *common_options(restic, repository, no_lock=True), "config")


def cat_lock_argv(restic: Restic, repository: Repository, lock: str) -> tuple[str, ...]:
    """Return the argv that prints lock ``lock`` as JSON (host name, pid, time, exclusive)."""
    return (restic.program, "cat", *common_options(restic, repository, no_lock=True), "lock", values.lock_id(lock))
