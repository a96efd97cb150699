"""Argv for ``restic ls --json``: browse a snapshot's files, one folder or a whole subtree."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from protocol.errors import InvalidInputError

from . import values
from .repository import Repository, common_options
from .version import Restic


def ls_argv(
    restic: Restic,
    repository: Repository,
    *,
    snapshot: str,
    folders: Iterable[str | PurePath] = (),
    recursive: bool = False,
    host: str | None = None,
    paths: Iterable[str | PurePath] = (),
    no_lock: bool = False,
    retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that lists the content of ``folders`` in ``snapshot`` (everything when none are named).

    With folders named, only their direct content is listed unless ``recursive``.
    """
    snapshot = values.snapshot_ref(snapshot)
    if snapshot == "latest" and host is None:
        raise InvalidInputError("'latest' needs the host it is the latest of")
    argv = [restic.program, "ls", *common_options(restic, repository, no_lock=no_lock, retry_lock=retry_lock),
            "--json"]
    if recursive:
        argv.append("--recursive")
    if host is not None:
        argv += ["--host", values.word(host, "host name")]
    for path in paths:
        argv += ["--path", values.absolute_path(path)]
    return (*argv, "--", snapshot, *(values.absolute_path(folder, "folder") for folder in folders))
