"""Argv for ``restic stats --json``: how big snapshots are (restored size, or raw data in the repository)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from protocol.errors import InvalidInputError

from . import values
from .repository import Repository, common_options
from .version import Restic

#: restic's counting modes: what a restore would write, or what the repository stores.
MODES = ("restore-size", "files-by-contents", "blobs-per-file", "raw-data")


def stats_argv(
    restic: Restic,
    repository: Repository,
    *,
    snapshots: Iterable[str] = (),
    mode: str = "restore-size",
    host: str | None = None,
    paths: Iterable[str | PurePath] = (),
    no_lock: bool = False,
    retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that counts ``snapshots`` (all matching ``host`` and ``paths`` when none are named)."""
    if mode not in MODES:
        raise InvalidInputError(f"not a restic stats mode: {mode!r}", hint=f"use one of {', '.join(MODES)}")
    snapshots = tuple(values.snapshot_ref(ref) for ref in snapshots)
    if "latest" in snapshots and host is None:
        raise InvalidInputError("'latest' needs the host it is the latest of")
    argv = [restic.program, "stats", *common_options(restic, repository, no_lock=no_lock, retry_lock=retry_lock),
            "--json", "--mode", mode]
    if host is not None:
        argv += ["--host", values.word(host, "host name")]
    for path in paths:
        argv += ["--path", values.absolute_path(path)]
    return (*argv, "--", *snapshots)
