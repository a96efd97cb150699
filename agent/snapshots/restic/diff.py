"""Argv for ``restic diff --json``: what changed between two snapshots."""

from __future__ import annotations

from protocol.errors import InvalidInputError

from . import values
from .repository import Repository, common_options
from .version import Restic


def diff_argv(
    restic: Restic, repository: Repository, *, before: str, after: str, no_lock: bool = False,
    retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that compares snapshot ``before`` with snapshot ``after`` (ids, not 'latest')."""
    before, after = (values.snapshot_ref(ref) for ref in (before, after))
    if "latest" in (before, after):
        raise InvalidInputError("diff compares two snapshot ids, not 'latest'")
    return (restic.program, "diff", *common_options(restic, repository, no_lock=no_lock, retry_lock=retry_lock),
            "--json", "--", before, after)
