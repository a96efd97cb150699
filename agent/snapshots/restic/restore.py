"""Argv for ``restic restore``: a snapshot (an id, or this host's latest of its paths) into a target folder.

A replacement PC restores from the old PC's repository with a read-only
credential, so it cannot take a lock there: ``no_lock``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from protocol.errors import InvalidInputError

from . import values
from .repository import Repository, common_options
from .version import Restic


def restore_argv(
    restic: Restic,
    repository: Repository,
    *,
    snapshot: str,
    target: str | PurePath,
    includes: Iterable[str | PurePath] = (),
    host: str | None = None,
    paths: Iterable[str | PurePath] = (),
    tags: Iterable[str] = (),
    no_lock: bool = False,
    retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that restores ``snapshot`` (or ``latest`` of ``host`` and ``paths``) under ``target``.

    ``includes`` restores only those paths of the snapshot (absolute, as they were backed up).
    """
    snapshot = values.snapshot_ref(snapshot)
    paths = tuple(values.absolute_path(path) for path in paths)
    if snapshot == "latest" and host is None:
        raise InvalidInputError("'latest' needs the host it is the latest of",
                                hint="name the PC's host, or a snapshot id")
    argv = [restic.program, "restore", *common_options(restic, repository, no_lock=no_lock, retry_lock=retry_lock),
            "--target", values.absolute_path(target, "restore target")]
    if restic.features.restore_json:
        argv.append("--json")
    for include in includes:
        argv += ["--include", values.absolute_path(include, "path to restore")]
    if host is not None:
        argv += ["--host", values.word(host, "host name")]
    for path in paths:
        argv += ["--path", path]
    tags = tuple(values.word(tag, "tag") for tag in tags)
    if tags:
        argv += ["--tag", ",".join(tags)]
    return (*argv, "--", snapshot)
