"""Argv for ``restic list locks``: the ids of the repository's locks, read without taking one."""

from __future__ import annotations

from .repository import Repository, common_options
from .version import Restic


def list_locks_argv(restic: Restic, repository: Repository) -> tuple[str, ...]:
    """Return the argv that lists ``repository``'s lock ids, one a line."""
    return (restic.program, "list", *common_options(restic, repository, no_lock=True), "locks")
