"""Argv for ``restic init``: create a repository whose password is in the repository's password file."""

from __future__ import annotations

from .repository import Repository, common_options
from .version import Restic


def init_argv(restic: Restic, repository: Repository) -> tuple[str, ...]:
    """Return the argv that creates ``repository``."""
    return (restic.program, "init", *common_options(restic, repository), "--json")
