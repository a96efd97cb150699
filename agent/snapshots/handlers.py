"""What an engineer's request does on this PC: snapshot now, restore, browse a snapshot, compare two.

The request channel (:mod:`agent.service.channel`) checks each request (the
server's signature, expiry, run once, the user's consent for a restore) and
then calls the handler of its kind with the request and a progress reporter;
these handlers read the request's params and call the verbs of
:class:`~agent.snapshots.jobs.Snapshots`. A restore for an OS user gives the
restored files to that user; an agent that runs as one user never restores
for another.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

from protocol.errors import ForbiddenError, InvalidInputError, NotFoundError
from protocol.pc_requests import (
    BrowseParams,
    DiffParams,
    PcRequest,
    PcRequestKind,
    RestoreParams,
    SnapshotParams,
    parse_target,
)

from . import restic as R
from .jobs import Snapshots

#: Nodes a browse answer carries at most, and changes a diff answer.
BROWSE_LIMIT = 1000
DIFF_LIMIT = 1000

Report = Callable[..., None]


def owner_of(user: str | None) -> tuple[int, int] | None:
    """The (uid, gid) restored files are given for OS user ``user``; None when they are already the caller's.

    Raise ForbiddenError when this agent runs as another, unprivileged account
    (it cannot give files away), NotFoundError for a user this PC does not have.
    """
    if user is None or os.name == "nt":
        return None
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise NotFoundError(f"this PC has no user called {user!r}") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise ForbiddenError(f"this agent runs as another account and cannot restore files for {user}",
                             hint="ask the user to approve the restore in their own `helpline requests`")
    return entry.pw_uid, entry.pw_gid


def request_handlers(snapshots: Snapshots, *, cancel: threading.Event | None = None) -> dict[PcRequestKind, Callable]:
    """The handlers of the request kinds snapshots serve, over ``snapshots``; ``cancel`` stops their restic runs."""

    def snapshot(request: PcRequest, report: Report) -> dict[str, Any]:
        params: SnapshotParams = request.typed_params()
        names = (params.repository,) if params.repository else None
        report(0.0, "Taking a snapshot.")
        runs = snapshots.run_snapshot(repositories=names, cancel=cancel, paths=tuple(params.paths),
                                      on_progress=lambda name, p: report(p.percent / 100, f"Snapshot ({name})"))
        failed = [run for run in runs if run.status == "failed"]
        if runs and len(failed) == len(runs) and failed[-1].exception is not None:
            raise failed[-1].exception
        return {"runs": [{"repository": run.repository, "status": run.status, "snapshot_id": run.snapshot_id,
                          "files_new": run.summary.files_new if run.summary else 0,
                          "bytes_added": run.summary.data_added if run.summary else 0,
                          "warnings": list(run.warnings[:10]), "error": run.error} for run in runs]}

    def restore(request: PcRequest, report: Report) -> dict[str, Any]:
        params: RestoreParams = request.typed_params()
        mode, folder = parse_target(params.target)
        owner = owner_of(params.user)
        source = None
        repository = params.repository or "local"
        if params.source_agent_id is not None:
            source = snapshots.source_repository(params.source_agent_id, request.id)
            repository = "server"
        paths = list(params.paths) or [str(path) for path in snapshots.policy.paths]
        if source is not None and not params.paths:
            raise InvalidInputError("a replacement restore names the paths to bring over",
                                    hint="name the folders, e.g. the old PC's home folder")
        restored = []
        for index, path in enumerate(paths):
            report(index / len(paths), f"Restoring {path}")
            done = snapshots.restore(
                path, snapshot=None if params.snapshot == "latest" else params.snapshot, at=params.at,
                to=None if folder is None else folder, overwrite=mode == "overwrite", repository=repository,
                source=source, owner=owner, cancel=cancel)
            restored.append({"path": done.path, "placed_at": str(done.placed_at),
                             "kept_at": str(done.kept_at) if done.kept_at else None, "snapshot_id": done.snapshot.id})
        return {"restored": restored}

    def browse(request: PcRequest, report: Report) -> dict[str, Any]:
        params: BrowseParams = request.typed_params()
        if params.source_agent_id is not None:
            repo, no_lock, host = snapshots.source_repository(params.source_agent_id, request.id), True, None
        else:
            name = params.repository or "local"
            repo, no_lock, host = snapshots.repository(name, purpose="restore"), name == "server", snapshots.host
        listing = R.ls(snapshots.restic, repo, snapshot=params.snapshot, folders=[params.path],
                       recursive=params.recursive, host=host, limit=BROWSE_LIMIT, no_lock=no_lock)
        return {"snapshot_id": listing.snapshot.id if listing.snapshot else None, "truncated": listing.truncated,
                "nodes": [{"path": n.path, "type": n.type, "size": n.size,
                           "mtime": n.mtime.isoformat() if n.mtime else None} for n in listing.nodes]}

    def diff(request: PcRequest, report: Report) -> dict[str, Any]:
        params: DiffParams = request.typed_params()
        name = params.repository or "local"
        repo = snapshots.repository(name, purpose="restore")
        found = R.diff(snapshots.restic, repo, before=params.snapshot, after=params.other, no_lock=name == "server")
        changes = [c for c in found.changes if params.path is None or c.path.startswith(params.path)]
        return {"changes": [{"path": c.path, "modifier": c.modifier} for c in changes[:DIFF_LIMIT]],
                "truncated": len(changes) > DIFF_LIMIT, "added_bytes": found.added_bytes,
                "removed_bytes": found.removed_bytes}

    def forgetting_source(handler: Callable) -> Callable:
        # Another PC's password and read credential (a replacement restore) are this request's only: gone after it.
        def run(request: PcRequest, report: Report) -> dict[str, Any]:
            try:
                return handler(request, report)
            finally:
                shutil.rmtree(snapshots.directory / "replacement" / request.id, ignore_errors=True)

        return run

    return {PcRequestKind.SNAPSHOT: snapshot, PcRequestKind.RESTORE: forgetting_source(restore),
            PcRequestKind.BROWSE: forgetting_source(browse), PcRequestKind.DIFF: diff}
