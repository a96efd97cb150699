"""Argv for ``restic backup``: always this PC's host name, the Helpline tag and absolute paths, with --json.

The host and the paths are what ``latest`` and ``--path`` select by later, so
they are never left to restic's guesses. On Windows, when the agent runs
elevated, restic is asked for a VSS snapshot so open files are read whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import PurePath

from protocol.errors import InvalidInputError

from . import values
from .repository import Repository, common_options
from .version import Restic


def backup_argv(
    restic: Restic,
    repository: Repository,
    *,
    host: str,
    paths: Iterable[str | PurePath],
    tags: Iterable[str] = (),
    excludes: Iterable[str] = (),
    exclude_files: Iterable[str | PurePath] = (),
    one_file_system: bool = False,
    use_fs_snapshot: bool = False,
    retry_lock: float | None = None,
    time: datetime | None = None,
) -> tuple[str, ...]:
    """Return the argv that snapshots ``paths`` of ``host`` into ``repository``.

    ``excludes`` are restic patterns, ``exclude_files`` files of them;
    ``use_fs_snapshot`` (Windows, elevated only: the caller knows) asks for VSS;
    ``time`` dates the snapshot (restic reads it in this PC's zone), else restic's now.
    """
    paths = tuple(values.absolute_path(path) for path in paths)
    if not paths:
        raise InvalidInputError("a snapshot needs at least one path")
    argv = [restic.program, "backup", *common_options(restic, repository, retry_lock=retry_lock), "--json",
            "--host", values.word(host, "host name")]
    for tag in values.tags(tags):
        argv += ["--tag", tag]
    for exclude in excludes:
        argv += ["--exclude", values.pattern(exclude, "exclude pattern")]
    for exclude_file in exclude_files:
        argv += ["--exclude-file", values.absolute_path(exclude_file, "exclude file")]
    if one_file_system:
        argv.append("--one-file-system")
    if use_fs_snapshot:
        argv.append("--use-fs-snapshot")
    if time is not None:
        argv += ["--time", time.astimezone().strftime("%Y-%m-%d %H:%M:%S")]
    return (*argv, "--", *paths)
