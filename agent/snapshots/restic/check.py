"""Argv for ``restic check``: the repository's structure, and optionally a subset of its data read back."""

from __future__ import annotations

import re

from protocol.errors import InvalidInputError

from .repository import Repository, common_options
from .version import Restic

#: ``n/t`` (group n of t) or a percentage, the subset forms restic 0.14 reads.
_SUBSET = re.compile(r"^(?:[1-9]\d*/[1-9]\d*|(?:100|[1-9]?\d)(?:\.\d+)?%)$")


def check_argv(
    restic: Restic, repository: Repository, *, read_data_subset: str | None = None, retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that checks ``repository``; ``read_data_subset`` (``1/10`` or ``5%``) also reads that data."""
    argv = [restic.program, "check", *common_options(restic, repository, retry_lock=retry_lock)]
    if read_data_subset is not None:
        if not _SUBSET.match(read_data_subset):
            raise InvalidInputError(f"not a data subset restic reads: {read_data_subset!r}",
                                    hint="write it as n/t (e.g. 1/10) or a percentage (e.g. 5%)")
        if "/" in read_data_subset:
            group, total = (int(part) for part in read_data_subset.split("/"))
            if group > total:
                raise InvalidInputError(f"data subset {read_data_subset} names a group past the last one")
        argv += ["--read-data-subset", read_data_subset]
    return tuple(argv)
