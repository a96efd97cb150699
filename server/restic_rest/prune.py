"""The server's own prune: `restic forget --prune` on each agent's repository, fenced against the agent.

restic 0.14 must be able to remove its own locks, so a PC holding an append
credential can remove or flood lock files. The server never lets that decide
its prune:

1. When a repository is due and no backup seems to run (no fresh lock of the
   agent's), or after :data:`QUIET_WAIT` regardless, the job *fences* it (``fenced_at``): from then on
   the agent can read and remove its own locks but upload nothing, so no new
   lock, pack or snapshot arrives while the prune runs.
2. The prune waits until every lock the agent made is stale by the server's
   own clock: received :data:`~server.restic_rest.backend.LOCK_STALE_AFTER`
   ago or more (restic refreshes a live lock every 5 minutes by uploading a new
   one, which the fence refuses). The times a PC writes inside its lock files
   are never trusted. A backup that was running when the fence went up fails
   its next upload and is made again on the PC's next run.
3. It then runs restic with the server's admin credential, whose view of
   ``locks/`` holds only the server's own locks, and whose deletions go to the
   trash. The agent cannot remove the server's lock (it removes only locks it
   made). The fence is lifted when restic ends, whatever the outcome.

The repository password comes from escrow
(:func:`server.restic_rest.hooks.escrowed_password`); an agent whose password
the server does not hold is skipped.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, or_, select

from protocol.snapshots import RepositoryMode
from server import audit
from server.audit import Actor
from server.db import transaction
from server.models import ResticObject, ResticRepository
from server.restic_rest import credentials, hooks
from server.restic_rest.backend import LOCK_STALE_AFTER
from server.runtime import ServerRuntime
from server.settings import ServerSettings

log = logging.getLogger("helpline.server.restic")

#: How long a due prune waits for a moment when the PC holds no fresh lock before it fences the repository anyway
#: (a PC that keeps fresh locks cannot put its prune off for longer).
QUIET_WAIT = timedelta(hours=24)
#: The longest one prune may run before it is stopped (and tried again at the next interval).
PRUNE_TIMEOUT_SECONDS = 6 * 3600
_TAIL = 800


@dataclass(frozen=True)
class Outcome:
    agent_id: str
    state: str  # pruned | failed | waiting | skipped
    detail: str = ""


def local_url(settings: ServerSettings) -> str:
    """Where the server's own restic reaches the repositories: ``[snapshots] local_url``, else host and port."""
    if settings.snapshots.local_url:
        return settings.snapshots.local_url
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert_file else "http"
    return f"{scheme}://{host}:{settings.port}"


def retention_args(settings: ServerSettings) -> list[str]:
    policy = settings.snapshots.retention
    args = []
    for name in ("hourly", "daily", "weekly", "monthly", "yearly"):
        count = getattr(policy, name)
        if count:
            args += [f"--keep-{name}", str(count)]
    return args


def due_repositories(state: ServerRuntime, now: datetime) -> list[str]:
    """Repositories fenced already, or not pruned for ``prune_interval_hours``, oldest first."""
    interval = timedelta(hours=state.settings.snapshots.prune_interval_hours)
    with transaction(state.read_sessions) as session:
        last = func.coalesce(ResticRepository.pruned_at, ResticRepository.created_at)
        query = (select(ResticRepository.agent_id)
                 .where(or_(ResticRepository.fenced_at.is_not(None), last <= now - interval))
                 .order_by(last))
        return list(session.scalars(query))


def ready_to_prune(session, agent_id: str, now: datetime) -> bool:
    """Whether every lock the agent made was received :data:`LOCK_STALE_AFTER` ago or more."""
    newest = session.scalar(select(func.max(ResticObject.created_at)).where(
        ResticObject.agent_id == agent_id, ResticObject.type == "locks", ResticObject.trashed_at.is_(None),
        ResticObject.created_by != RepositoryMode.ADMIN.value))
    return newest is None or newest <= now - LOCK_STALE_AFTER


def prune_one(state: ServerRuntime, agent_id: str) -> Outcome:
    """Fence, wait for stale locks, then forget and prune one repository (see the module's text)."""
    settings = state.settings
    now = state.clock()
    with transaction(state.sessions) as session:
        password = hooks.escrowed_password(session, agent_id)
        repo = session.get(ResticRepository, agent_id)
        if repo is None:
            return Outcome(agent_id, "skipped", "no repository")
        if password is None:
            repo.fenced_at = None
            return Outcome(agent_id, "skipped", "the server holds no password for it")
        if repo.fenced_at is None:
            due_since = (repo.pruned_at or repo.created_at) + timedelta(hours=settings.snapshots.prune_interval_hours)
            if not ready_to_prune(session, agent_id, now) and now < due_since + QUIET_WAIT:
                return Outcome(agent_id, "waiting", "a backup seems to be running; the prune waits for a quiet moment")
            repo.fenced_at = now
        if not ready_to_prune(session, agent_id, now):
            return Outcome(agent_id, "waiting", "the PC's locks are not stale yet")
        credential_id, url = credentials.issue_admin(session, settings.snapshots, agent_id, base_url=local_url(settings),
                                                     purpose="prune", now=now)
    try:
        ok, detail = run_restic(settings, url, password, ["forget", "--prune", *retention_args(settings)])
    finally:
        with transaction(state.sessions) as session:
            credentials.end_credential(session, credential_id, state.clock())
            repo = session.get(ResticRepository, agent_id)
            if repo is not None:
                repo.fenced_at, repo.pruned_at = None, state.clock()
    with transaction(state.sessions) as session:
        audit.record(session, Actor.system("prune"), "restic.prune" if ok else "restic.prune.failed", "agent", agent_id,
                     detail=detail[-_TAIL:])
    return Outcome(agent_id, "pruned" if ok else "failed", detail)


def run_restic(settings: ServerSettings, url: str, password: str, args: Sequence[str]) -> tuple[bool, str]:
    """Run restic on the repository at ``url``; (whether it succeeded, the tail of its output).

    The URL (which carries the credential) and the password go through 0600
    files, never argv or the environment; restic's environment is the bare
    minimum, so nothing of the server's own reaches it.
    """
    scratch = settings.data_dir / "restic-tmp"
    scratch.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        repository_file, password_file = Path(folder) / "repository", Path(folder) / "password"
        for path, text in ((repository_file, f"rest:{url}\n"), (password_file, password + "\n")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        argv = [settings.snapshots.restic, "--repository-file", str(repository_file), "--password-file",
                str(password_file), "--no-cache"]
        if settings.tls_cert_file and url.startswith("https:"):
            argv += ["--cacert", str(settings.tls_cert_file)]
        argv += list(args)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": folder, "TMPDIR": folder}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=PRUNE_TIMEOUT_SECONDS,
                                  stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            return False, f"restic is not installed here ({settings.snapshots.restic}); set [snapshots] restic"
        except subprocess.TimeoutExpired:
            return False, f"restic ran over {PRUNE_TIMEOUT_SECONDS} seconds and was stopped"
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, output[-_TAIL:]


def prune_repositories(state: ServerRuntime) -> str:
    """The job: prune every due repository; one line saying what happened."""
    if not state.settings.snapshots.enabled:
        return "server-side snapshots are off"
    outcomes = [prune_one(state, agent_id) for agent_id in due_repositories(state, state.clock())]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
        if outcome.state == "failed":
            log.warning("pruning the repository of agent %s failed: %s", outcome.agent_id, outcome.detail[-200:])
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no repository due"


def empty_trash(state: ServerRuntime) -> str:
    """The job: remove blobs trashed longer than ``trash_days`` ago, and expired credentials."""
    from server.restic_rest import trash

    now = state.clock()
    with transaction(state.sessions) as session:
        keys = trash.empty(session, state.settings.snapshots.trash_days, now)
        swept = credentials.sweep_expired(session, now)
    for key in keys:
        state.blobs.delete(key)
    return f"removed {len(keys)} trashed restic objects and {swept} expired repository credentials"
