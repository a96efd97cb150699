"""What each kind of engineer's request does on this PC, over the snapshot verbs (agent.snapshots.jobs).

A handler gets a request that passed every check (agent.service.requests) and
a ``report`` callback for progress, and returns the result the engineer sees
(the shapes of protocol.pc_requests: RestoreResult, BrowseResult, DiffResult).
A restore never overwrites silently (beside the original, into a folder, or
over it keeping what it replaced) and gives restored files to the user they
belong to, never to the service's account. A replacement restore reads the
old PC's server-side repository with a read-only credential and its escrowed
password released for that one request, without locking (it cannot write there).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePath

from agent.paths import write_private
from agent.service.requests import Handler, Report
from agent.snapshots import restic as R
from agent.snapshots.jobs import Snapshots
from protocol.errors import ConfigError, ForbiddenError, HelplineError, InvalidInputError, NotFoundError
from protocol.pc_requests import (
    MAX_RESULT_ENTRIES,
    BrowseEntry,
    BrowseParams,
    BrowseResult,
    DiffChange,
    DiffParams,
    DiffResult,
    PcRequest,
    PcRequestKind,
    RestoreParams,
    RestoreResult,
    SnapshotParams,
    parse_target,
)
from protocol.snapshots import CredentialRequest


def request_handlers(snapshots: Snapshots, *, cancel: threading.Event | None = None) -> dict[PcRequestKind, Handler]:
    """The handlers of the requests this PC takes, over ``snapshots``; ``cancel`` stops a restic run under way."""
    return {
        PcRequestKind.SNAPSHOT: lambda request, report: snapshot_now(snapshots, request, report, cancel=cancel),
        PcRequestKind.RESTORE: lambda request, report: restore(snapshots, request, report, cancel=cancel),
        PcRequestKind.BROWSE: lambda request, report: browse(snapshots, request, report),
        PcRequestKind.DIFF: lambda request, report: diff(snapshots, request, report),
    }


def _progress(report: Report) -> Callable[[R.Progress], None]:
    return lambda p: report(progress=min(1.0, max(0.0, p.percent / 100.0)),
                            detail=f"{p.files_done} of {p.total_files} files")


# --- snapshot now -------------------------------------------------------------------------------


def snapshot_now(snapshots: Snapshots, request: PcRequest, report: Report, *,
                 cancel: threading.Event | None = None) -> dict:
    """Take a snapshot into the policy's repositories (or the one named) now; fail if none was made."""
    params: SnapshotParams = request.typed_params()
    runs = snapshots.run_snapshot(repositories=(params.repository,) if params.repository else None,
                                  on_progress=lambda name, p: _progress(report)(p), cancel=cancel)
    result = {"runs": [{"repository": run.repository, "status": run.status, "snapshot_id": run.snapshot_id,
                        "files_new": run.summary.files_new if run.summary else 0,
                        "files_changed": run.summary.files_changed if run.summary else 0,
                        "bytes_added": run.summary.data_added if run.summary else 0,
                        "warnings": list(run.warnings[:5]), "error": run.error} for run in runs]}
    if runs and all(run.status == "failed" for run in runs):
        first = runs[0]
        raise (first.exception or HelplineError(first.error or "The snapshot failed."))
    return result


# --- restore ----------------------------------------------------------------------------------


def _owner_of(params: RestoreParams, original: str) -> tuple[int, int] | None:
    """Who restored files belong to: the named OS user; as the service (root), the owner of the original's
    nearest existing folder; else nobody to change (the files are the running user's)."""
    if params.user is not None:
        try:
            import pwd
        except ImportError as exc:  # Windows: files take the folder's permissions
            raise ConfigError("Restoring for another user is not supported on this system yet.") from exc
        try:
            entry = pwd.getpwnam(params.user)
        except KeyError:
            raise NotFoundError(f"There is no user {params.user!r} on this PC.") from None
        if hasattr(os, "geteuid") and os.geteuid() not in (0, entry.pw_uid):
            raise ForbiddenError(f"Only the agent service can restore files for {params.user}.",
                                 hint="Run the restore as that user, or through the agent service.")
        return entry.pw_uid, entry.pw_gid
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        here = Path(original).parent
        while not here.exists() and here != here.parent:
            here = here.parent
        if here != here.parent:
            info = here.stat()
            return info.st_uid, info.st_gid
    return None


def _count(path: Path) -> tuple[int, int]:
    """Files and bytes under ``path`` (a file counts itself)."""
    if path.is_file() or path.is_symlink():
        return 1, path.lstat().st_size
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(root, name)).st_size
    return files, size


def _choose(found: tuple[R.Snapshot, ...], snapshot: str, at: datetime | None, where: str) -> R.Snapshot:
    """The snapshot ``snapshot`` names (an id, its start, or latest), or the last at or before ``at``."""
    if snapshot != "latest":
        named = [s for s in found if s.id.startswith(snapshot)]
        if not named:
            raise NotFoundError(f"There is no snapshot {snapshot} in {where}.")
        return named[-1]
    if at is not None:
        found = tuple(s for s in found if s.time <= at)
    if not found:
        raise NotFoundError(f"There is no snapshot{' from before ' + at.isoformat() if at else ''} in {where}.")
    return found[-1]


def restore(snapshots: Snapshots, request: PcRequest, report: Report, *, cancel: threading.Event | None = None) -> dict:
    """Restore the request's paths (or every path of the snapshot) on this PC; see the module's words."""
    params: RestoreParams = request.typed_params()
    if params.source_agent_id:
        return replacement_restore(snapshots, request, params, report, cancel=cancel)
    mode, folder = parse_target(params.target)
    repository = params.repository or snapshots.repositories()[0]
    paths = list(params.paths)
    if not paths:  # everything: each path the chosen snapshot holds
        found = snapshots.list_snapshots(repository)
        chosen = _choose(found, params.snapshot, params.at, f"the {repository} repository")
        paths = list(chosen.paths)
        snapshot_ref = chosen.id
    else:
        snapshot_ref = None if params.snapshot == "latest" else params.snapshot
    placed, kept, files, size, used = [], [], 0, 0, None
    for index, path in enumerate(paths):
        report(progress=index / len(paths), detail=f"restoring {path}")
        done = snapshots.restore(path, snapshot=snapshot_ref, at=params.at if snapshot_ref is None else None,
                                 to=Path(folder) if folder else None, overwrite=mode == "overwrite",
                                 repository=repository, owner=_owner_of(params, path), cancel=cancel)
        used = done.snapshot.id
        placed.append(str(done.placed_at))
        if done.kept_at is not None:
            kept.append(str(done.kept_at))
        count, nbytes = _count(done.placed_at)
        files, size = files + count, size + nbytes
    result = RestoreResult(snapshot=used or "", target=folder or mode, files_restored=files, bytes_restored=size,
                           kept=", ".join(kept) or None)
    return {**result.model_dump(mode="json"), "placed": placed[:MAX_RESULT_ENTRIES]}


# --- replacement restore: another PC's server-side repository ---------------------------------------


def _replacement_repository(snapshots: Snapshots, request: PcRequest, source: str) -> tuple[R.Repository, Path]:
    """The old PC's repository, read-only for this request, and the private folder holding its secrets."""
    folder = snapshots.directory / "replacement" / request.id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with snapshots.client() as client:
        credential = client.snapshot_credential(CredentialRequest(purpose="restore", request_id=request.id,
                                                                  agent_id=source))
        escrow = client.get_escrow(request.id)
    password = folder / "password"
    write_private(password, escrow.password.encode())
    location = credential.url if credential.url.startswith("rest:") else f"rest:{credential.url}"
    location_file = folder / "repository"
    write_private(location_file, location.encode())
    return R.Repository(location, password, cache_dir=folder / "cache", location_file=location_file), folder


def replacement_restore(snapshots: Snapshots, request: PcRequest, params: RestoreParams, report: Report, *,
                        cancel: threading.Event | None = None) -> dict:
    """Restore the old PC's snapshot (its paths, or everything) onto this PC, without locking its repository."""
    mode, folder = parse_target(params.target)
    repository, secrets = _replacement_repository(snapshots, request, params.source_agent_id or "")
    try:
        found = R.snapshots(snapshots.restic, repository, host=None, no_lock=True)
        chosen = _choose(found, params.snapshot, params.at, "the old PC's repository")
        wanted = list(params.paths) or list(chosen.paths)
        report(progress=0.0, detail=f"restoring snapshot {chosen.short_id} of {chosen.hostname}")
        placed, kept, files, size = [], [], 0, 0
        base = Path(folder) if folder else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(wanted):
            original = Path(path)
            if base is not None:
                final = _free(base / original.name)
            elif mode == "overwrite":
                final = original
            else:
                final = _free(original.with_name(f"{original.name}.restored-{chosen.time.astimezone():%Y%m%d-%H%M}"))
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".helpline-restore-", dir=final.parent))
            try:
                R.restore(snapshots.restic, repository, snapshot=chosen.id, target=staging, includes=[path],
                          no_lock=True, cancel=cancel,
                          on_progress=lambda p, i=index: report(progress=(i + p.percent / 100.0) / len(wanted),
                                                                detail=f"{p.files_done} of {p.total_files} files"))
                restored = _restored_path(staging, path)
                if not os.path.lexists(restored):
                    raise NotFoundError(f"{path} is not in snapshot {chosen.short_id} of the old PC.")
                owner = _owner_of(params, path)
                if owner is not None:
                    _give(restored, owner)
                if mode == "overwrite" and os.path.lexists(final):
                    aside = _free(final.with_name(f"{final.name}.replaced-{datetime.now().astimezone():%Y%m%d-%H%M}"))
                    os.rename(final, aside)
                    kept.append(str(aside))
                os.rename(restored, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            placed.append(str(final))
            count, nbytes = _count(final)
            files, size = files + count, size + nbytes
    finally:
        shutil.rmtree(secrets, ignore_errors=True)  # the old PC's password and credential go with the request
    result = RestoreResult(snapshot=chosen.id, source_agent_id=params.source_agent_id, target=folder or mode,
                           files_restored=files, bytes_restored=size, kept=", ".join(kept) or None)
    return {**result.model_dump(mode="json"), "placed": placed[:MAX_RESULT_ENTRIES]}


def _restored_path(folder: Path, original: str) -> Path:
    """Where restic puts ``original`` under a restore target: the path below its root (a drive letter, a folder)."""
    parts = list(PurePath(original).parts)
    drive = parts.pop(0).rstrip(":\\/").rstrip(":")
    return folder.joinpath(*([drive] if drive else []), *parts)


def _free(path: Path) -> Path:
    if not os.path.lexists(path):
        return path
    for number in range(2, 1000):
        candidate = path.with_name(f"{path.name}-{number}")
        if not os.path.lexists(candidate):
            return candidate
    raise InvalidInputError(f"Too many earlier restores beside {path}.", hint="Restore into a folder instead.")


def _give(path: Path, owner: tuple[int, int]) -> None:
    uid, gid = owner
    os.lchown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)


# --- browse and diff ------------------------------------------------------------------------------


def _repository(snapshots: Snapshots, name: str | None) -> R.Repository:
    return snapshots.repository(name or snapshots.repositories()[0], purpose="restore")


def browse(snapshots: Snapshots, request: PcRequest, report: Report) -> dict:
    """What a snapshot holds under a path (one level, or all of it with ``recursive``), at most 2000 entries."""
    params: BrowseParams = request.typed_params()
    if params.source_agent_id:
        repository, secrets = _replacement_repository(snapshots, request, params.source_agent_id)
        no_lock, host = True, None
    else:
        repository, secrets, no_lock, host = _repository(snapshots, params.repository), None, False, snapshots.host
    try:
        found = R.snapshots(snapshots.restic, repository, host=host, no_lock=no_lock)
        chosen = _choose(found, params.snapshot, None, "the repository")
        listing = R.ls(snapshots.restic, repository, snapshot=chosen.id, folders=[params.path],
                       recursive=params.recursive, limit=MAX_RESULT_ENTRIES, no_lock=no_lock)
    finally:
        if secrets is not None:
            shutil.rmtree(secrets, ignore_errors=True)
    entries = [BrowseEntry(path=node.path, type=node.type, size=node.size, mtime=node.mtime)
               for node in listing.nodes if node.path != params.path or node.type != "dir"]
    return BrowseResult(snapshot=chosen.id, path=params.path, entries=entries,
                        truncated=listing.truncated).model_dump(mode="json")


def diff(snapshots: Snapshots, request: PcRequest, report: Report) -> dict:
    """What changed from one snapshot to another (under a path, if named), at most 2000 changes listed."""
    params: DiffParams = request.typed_params()
    repository = _repository(snapshots, params.repository)
    found = R.snapshots(snapshots.restic, repository, host=snapshots.host)
    before = _choose(found, params.snapshot, None, "the repository")
    after = _choose(found, params.other, None, "the repository")
    changes = R.diff(snapshots.restic, repository, before=before.id, after=after.id).changes
    if params.path:
        prefix = params.path.rstrip("/") + "/"
        changes = tuple(c for c in changes if c.path == params.path or c.path.startswith(prefix))
    counts = {m: sum(1 for c in changes if c.modifier == m) for m in ("+", "-")}
    return DiffResult(snapshot=before.id, other=after.id,
                      changes=[DiffChange(path=c.path, change=c.modifier) for c in changes[:MAX_RESULT_ENTRIES]],
                      added=counts["+"], removed=counts["-"], changed=len(changes) - counts["+"] - counts["-"],
                      truncated=len(changes) > MAX_RESULT_ENTRIES).model_dump(mode="json")
