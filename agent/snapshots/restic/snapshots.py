"""Argv for ``restic snapshots --json``: the snapshots of one host, tag and path set."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

from . import values
from .repository import Repository, common_options
from .version import Restic


def snapshots_argv(
    restic: Restic,
    repository: Repository,
    *,
    host: str | None = None,
    tags: Iterable[str] = (values.HELPLINE_TAG,),
    paths: Iterable[str | PurePath] = (),
    latest: int | None = None,
    no_lock: bool = False,
    retry_lock: float | None = None,
) -> tuple[str, ...]:
    """Return the argv that lists the snapshots matching ``host``, every one of ``tags`` and ``paths``.

    ``latest`` keeps only the newest that many per host and path set.
    """
    argv = [restic.program, "snapshots", *common_options(restic, repository, no_lock=no_lock, retry_lock=retry_lock),
            "--json"]
    if host is not None:
        argv += ["--host", values.word(host, "host name")]
    tags = tuple(values.word(tag, "tag") for tag in tags)
    if tags:
        argv += ["--tag", ",".join(tags)]  # one --tag with a comma list: snapshots carrying all of them
    for path in paths:
        argv += ["--path", values.absolute_path(path)]
    if latest is not None:
        argv += ["--latest", str(int(latest))]
    return tuple(argv)
