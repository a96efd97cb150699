"""The snapshot verbs the user's commands, the agent service and an engineer's requests call.

:class:`Snapshots` is one PC's snapshot work over its agent folder: it opens
the repositories of the policy (the local one on this PC; the server's one
through a short-lived credential for this agent's own repository), creates
them the first time (one generated password per agent, escrowed to the server
when the server takes it), takes snapshots, applies retention, checks,
restores, proves a restore with a sample, and says how protected the PC is.
Each result is remembered (:mod:`.state`) and reported to the server when the
PC is linked to one; a report the server cannot take now waits for the next
check-in. Nothing here prints: progress goes to callbacks, failures raise the
errors of :mod:`protocol.errors` (with the restic wrapper's own kinds).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from agent.execute import Outcome
from agent.leftovers import owned_name, stale_folders
from agent.paths import write_private
from agent.store import AgentStore
from protocol.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    HelplineError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)

from . import restic as R
from .policy import SnapshotPolicy, load_policy
from .restic.run import this_host
from .schedule import Work, on_battery, plan
from .state import RepositoryRecord, SnapshotState, StateFile
from .verify import VerifyResult, sample_restore

if TYPE_CHECKING:  # the server's client and the report models load when a run talks to the server, not for a
    # local restore
    from agent.client import HelplineClient

logger = logging.getLogger("helpline.snapshots")

#: The one repository password of this agent (both repositories open with it; the server escrows it).
PASSWORD_NAME = "repository"
REPOSITORY_NAMES = ("local", "server")

Clock = Callable[[], datetime]
ClientFactory = Callable[[], "HelplineClient"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class RepositoryFull(ConflictError):
    """The local repository may not grow: its disk is down to the policy's margin, or it reached its size cap."""


@dataclass(frozen=True)
class SnapshotRun:
    """How one snapshot run into one repository went; ``status`` is ``ok``, ``partial`` or ``failed``."""

    repository: str
    status: str
    started_at: datetime
    finished_at: datetime
    snapshot_id: str | None = None
    summary: R.BackupSummary | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    #: The error itself, for callers that turn it into an exit status.
    exception: HelplineError | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Restored:
    """Where a restore put a path back: ``placed_at``; ``kept_at`` holds what an overwrite replaced."""

    snapshot: R.Snapshot
    path: str
    placed_at: Path
    kept_at: Path | None = None


@dataclass(frozen=True)
class Protection:
    """How protected this PC is, from what it remembers: a state word and a sentence for people."""

    state: str
    words: str
    last_snapshot_at: datetime | None
    last_snapshot_id: str | None
    last_verified_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None


def ago(when: datetime, now: datetime) -> str:
    """Say how long ago ``when`` was, as people do: "just now", "40 minutes ago", "3 hours ago", "yesterday"."""
    seconds = (now - when).total_seconds()
    if seconds < 90:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} minutes ago"
    if seconds < 6 * 3600 or now.astimezone().date() == when.astimezone().date():
        hours = round(seconds / 3600)
        return "1 hour ago" if hours == 1 else f"{hours} hours ago"
    days = (now.astimezone().date() - when.astimezone().date()).days
    return "yesterday" if days <= 1 else f"{days} days ago"


def _covers(snapshot: R.Snapshot, path: str) -> bool:
    """True if ``path`` lies at or under one of the snapshot's paths."""
    target = PurePath(path)
    return any(target == PurePath(root) or PurePath(root) in target.parents for root in snapshot.paths)


def windows_elevated() -> bool:
    """True on Windows when the agent runs elevated (an administrator or LocalSystem): restic may then ask for a
    VSS snapshot, so files other programs hold open are read whole. False everywhere else."""
    if os.name != "nt":
        return False
    try:
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False


def _free_bytes(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or would, once made)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _size(n: int) -> str:
    from protocol.units import human_size

    return human_size(n)


class Snapshots:
    """This PC's snapshot work, kept in ``store``'s folder (``snapshots/``: password, state, caches)."""

    def __init__(
        self,
        store: AgentStore | None = None,
        *,
        policy: SnapshotPolicy | None = None,
        restic: R.Restic | None = None,
        clock: Clock = utc_now,
        client_factory: ClientFactory | None = None,
        host: str | None = None,
        battery: Callable[[], bool] = on_battery,
        fs_snapshot: Callable[[], bool] = windows_elevated,
    ):
        self.store = store or AgentStore()
        self.directory = self.store.directory / "snapshots"
        self._policy = policy
        self._restic = restic
        self.clock = clock
        self._client_factory = client_factory
        self.host = host or this_host()
        self.battery = battery
        self.fs_snapshot = fs_snapshot
        self.state = StateFile(self.directory)

    # --- what it works with ---------------------------------------------------------------

    @property
    def policy(self) -> SnapshotPolicy:
        if self._policy is None:
            self._policy = load_policy(data_dir=self.store.directory)
            self._policy_loaded = True
        return self._policy

    def reload_policy(self) -> None:
        """Read the policy again at its next use (a new group policy arrived); a policy given at creation stays."""
        if getattr(self, "_policy_loaded", False):
            self._policy = None

    @property
    def restic(self) -> R.Restic:
        if self._restic is None:
            self._restic = R.detect("restic", remember_in=self.directory / "restic-version.json")
        return self._restic

    @property
    def linked(self) -> bool:
        """True when this PC is linked to a Helpline server (so it has a server repository and reports)."""
        return self.store.load() is not None

    def new_client(self) -> HelplineClient:
        """A new client of this PC's server, signing as this PC's agent (ConfigError if it is not linked)."""
        if self._client_factory is not None:
            return self._client_factory()
        from agent.client import HelplineClient

        state = self.store.require()
        return HelplineClient.connect(state.server_url, agent=self.store.signer(state), timeout=60)

    @contextmanager
    def client(self) -> Iterator[HelplineClient]:
        """A client of this PC's server for one errand, closed after it."""
        if self._client_factory is not None:
            yield self._client_factory()
            return
        client = self.new_client()
        try:
            yield client
        finally:
            client.close()

    def repositories(self) -> tuple[str, ...]:
        """The repositories snapshots go to now: the policy's, less the server's while the PC is not linked."""
        return tuple(name for name in self.policy.repositories if name != "server" or self.linked)

    def password_file(self) -> Path:
        return R.ensure_password_file(self.directory / "keys", PASSWORD_NAME)

    def repository(self, name: str, *, purpose: str = "backup") -> R.Repository:
        """The restic repository ``name`` (``local`` or ``server``), ready to open; the server's needs a fresh
        credential for ``purpose`` (``backup``, ``restore`` or ``check``)."""
        cache = self.directory / "cache"
        if name == "local":
            if self.policy.local_repository is None:
                raise ConfigError("the snapshot policy keeps no local repository",
                                  hint="set [snapshots] local = true in agent.toml, or use the server's repository")
            return R.Repository(str(self.policy.local_repository), self.password_file(), cache_dir=cache)
        if name == "server":
            if not self.linked:
                raise ConfigError("this PC is not linked to a Helpline server, so it has no server repository",
                                  hint="use the local repository, or link this PC with `helpline pair` first")
            from protocol.snapshots import CredentialRequest

            with self.client() as client:
                credential = client.snapshot_credential(CredentialRequest(purpose=purpose))
            location = credential.url if credential.url.startswith("rest:") else f"rest:{credential.url}"
            location_file = self.directory / "server.repository"
            write_private(location_file, location.encode())
            return R.Repository(location, self.password_file(), cache_dir=cache, location_file=location_file)
        raise InvalidInputError(f"no repository is called {name!r}", hint="use local or server")

    # --- snapshots --------------------------------------------------------------------------

    def source_repository(self, source_agent_id: str, request_id: str) -> R.Repository:
        """Another PC's server-side repository, readable by this PC for the replacement restore ``request_id`` only:
        a read-only credential and the escrowed password, both released by the server for that request."""
        from protocol.snapshots import CredentialRequest

        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", request_id):
            raise InvalidInputError(f"not a request id: {request_id!r}")
        with self.client() as client:
            credential = client.snapshot_credential(CredentialRequest(purpose="restore", request_id=request_id,
                                                                      agent_id=source_agent_id))
            escrowed = client.get_escrow(request_id)
        folder = self.directory / "replacement" / request_id
        location = credential.url if credential.url.startswith("rest:") else f"rest:{credential.url}"
        write_private(folder / "repository", location.encode())
        write_private(folder / "password", (escrowed.password + "\n").encode())
        return R.Repository(location, folder / "password", cache_dir=self.directory / "cache",
                            location_file=folder / "repository")

    def _ensure_initialized(self, name: str, repository: R.Repository) -> None:
        record = self.state.read().repository(name)
        if not record.initialized:
            if not R.exists(self.restic, repository):
                if name == "local":
                    Path(repository.location).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                R.init(self.restic, repository)
                logger.info("created the %s snapshot repository at %s", name, repository.display)
            self.state.change(lambda s: setattr(s.repository(name), "initialized", True))
        self._escrow(name)

    def _escrow(self, name: str) -> None:
        """Send the repository password to the server's escrow once; remember a refusal (escrow turned off)."""
        if self.state.read().repository(name).escrow is not None or not self.linked:
            return  # the usual case, before every snapshot: no server models load for it (restic waits)
        from protocol.snapshots import EscrowPut

        from agent.group_policy import GroupPolicy

        group = GroupPolicy(self.store.directory).body()
        if group is not None and group.escrow is False:
            return  # the group's policy keeps the password on this PC alone (asked again if it turns escrow on)
        password = self.password_file().read_text().strip()
        try:
            with self.client() as client:
                client.put_escrow(EscrowPut(password=password))
            outcome = "sent"
        except ForbiddenError:
            outcome = "refused"  # the server keeps no escrow: the password stays on this PC alone
        except UnavailableError as exc:
            logger.info("could not escrow the repository password yet: %s", exc.message)
            return
        self.state.change(lambda s: setattr(s.repository(name), "escrow", outcome))

    def _check_room(self, repository: R.Repository) -> None:
        """Refuse to grow the local repository past the disk's margin or its size cap (RepositoryFull)."""
        folder = Path(repository.location)
        policy = self.policy
        free = _free_bytes(folder)
        if free < policy.free_space_margin:
            raise RepositoryFull(
                f"the disk holding the local snapshot repository has {_size(free)} free, less than the "
                f"{_size(policy.free_space_margin)} kept free: the local repository stops growing",
                hint="free some space on that disk, or change [snapshots] free_space_margin in agent.toml")
        if policy.local_max_size is not None and folder.exists():
            used = _folder_size(folder)
            if used >= policy.local_max_size:
                raise RepositoryFull(
                    f"the local snapshot repository holds {_size(used)}, its cap is {_size(policy.local_max_size)}: "
                    "it stops growing", hint="raise [snapshots] local_max_size in agent.toml, or keep fewer snapshots")

    def _excludes(self) -> tuple[str, ...]:
        """The policy's excludes, plus the agent's own snapshot folder and local repository (never inside a snapshot)."""
        own = [str(self.directory)]
        if self.policy.local_repository is not None:
            own.append(str(self.policy.local_repository))
        return (*self.policy.excludes, *own)

    def snapshot_into(self, name: str, *, on_progress: Callable[[R.Progress], None] | None = None,
                      cancel: threading.Event | None = None, paths: tuple[str, ...] = ()) -> SnapshotRun:
        """Take one snapshot of the policy's paths into repository ``name``; remember and report how it went.

        Failures are returned as a ``failed`` run (and remembered as failures,
        never as a success); a cancelled run is remembered too, then its
        :class:`~.restic.ResticCancelled` is raised.
        """
        started = self.clock()
        self.state.change(lambda s: setattr(s.repository(name), "last_attempt", started))
        paths = list(paths) or [str(path) for path in self.policy.paths]
        warming = None
        try:
            repository = self.repository(name, purpose="backup")
            self._ensure_initialized(name, repository)
            if name == "local":
                self._check_room(repository)
            warming = _in_background(_ready_report)  # the report's model, built while restic works
            summary = R.backup(self.restic, repository, host=self.host, paths=paths, excludes=self._excludes(),
                               one_file_system=self.policy.one_file_system, use_fs_snapshot=self.fs_snapshot(),
                               on_progress=on_progress, cancel=cancel, time=started)
        except HelplineError as exc:
            run = SnapshotRun(name, "failed", started, self.clock(), error=exc.message, exception=exc)
            if warming is not None:
                warming.join()
            self._remember(run, paths)
            if isinstance(exc, R.ResticCancelled):
                raise
            return run
        warming.join()
        from protocol.snapshots import MAX_WARNINGS

        status = "partial" if summary.outcome is Outcome.WARNING else "ok"
        warnings = (summary.warning,) if summary.warning else ()
        run = SnapshotRun(name, status, started, self.clock(), snapshot_id=summary.snapshot_id, summary=summary,
                          warnings=(*warnings, *summary.unreadable[:MAX_WARNINGS - 1]))
        self._remember(run, paths)
        return run

    def _remember(self, run: SnapshotRun, paths: list[str]) -> None:
        from protocol.snapshots import MAX_WARNINGS, SnapshotReport

        summary = run.summary
        body = SnapshotReport(
            repository=run.repository, status=run.status, snapshot_id=run.snapshot_id, started_at=run.started_at,
            finished_at=run.finished_at, paths=paths[:1000],
            files_new=summary.files_new if summary else 0, files_changed=summary.files_changed if summary else 0,
            files_unmodified=summary.files_unmodified if summary else 0,
            total_files=summary.total_files_processed if summary else 0,
            bytes_added=summary.data_added if summary else 0,
            total_bytes=summary.total_bytes_processed if summary else 0,
            warnings=[text[:2000] for text in run.warnings[:MAX_WARNINGS]],
            error=run.error[:2000] if run.error else None,
        )

        def edit(state: SnapshotState) -> None:
            record = state.repository(run.repository)
            record.last_status = run.status
            record.remember_paths(paths, succeeded=run.status != "failed", at=run.finished_at,
                                  snapshot_id=run.snapshot_id, error=run.error)
            if run.status == "failed":
                record.last_failure = run.finished_at
                record.last_error = run.error
                if isinstance(run.exception, RepositoryFull):
                    record.full = run.error
            else:
                record.last_success = run.finished_at
                record.last_snapshot_id = run.snapshot_id
                record.full = None
                if run.snapshot_id:
                    record.remember_snapshot(run.snapshot_id, run.started_at, paths)
            state.queue("snapshot", body.model_dump(mode="json"))

        self.state.change(edit)

    def run_snapshot(self, *, repositories: tuple[str, ...] | None = None,
                     on_progress: Callable[[str, R.Progress], None] | None = None,
                     cancel: threading.Event | None = None, paths: tuple[str, ...] = ()) -> list[SnapshotRun]:
        """Take a snapshot (of the policy's paths, or ``paths``) into each repository (default: the policy's), now,
        whatever the schedule says."""
        runs = []
        for name in repositories or self.repositories():
            progress = (lambda p, name=name: on_progress(name, p)) if on_progress is not None else None
            runs.append(self.snapshot_into(name, on_progress=progress, cancel=cancel, paths=paths))
        self.send_reports()
        return runs

    # --- retention, checks and sample restores ---------------------------------------------------

    def forget(self, name: str = "local", *, cancel: threading.Event | None = None) -> R.ForgetResult:
        """Apply the policy's retention to this PC's snapshots in repository ``name``."""
        result = R.forget(self.restic, self.repository(name), host=self.host, retention=self.policy.retention,
                          cancel=cancel)
        at = self.clock()
        removed = set(result.removed)

        def edit(state: SnapshotState) -> None:
            record = state.repository(name)
            record.last_forget = at
            # restic's backup summary may give the short id: a removed full id starting with it is the same snapshot.
            record.recent = [item for item in record.recent
                             if not any(full.startswith(str(item.get("id"))) for full in removed)]

        self.state.change(edit)
        return result

    def prune(self, name: str = "local", *, cancel: threading.Event | None = None) -> None:
        """Remove the data no kept snapshot refers to from repository ``name``."""
        R.prune(self.restic, self.repository(name), cancel=cancel)
        at = self.clock()
        self.state.change(lambda s: setattr(s.repository(name), "last_prune", at))

    def check(self, name: str = "local", *, cancel: threading.Event | None = None) -> bool:
        """Check repository ``name``'s structure; remember and return whether it is sound."""
        from protocol.snapshots import VerifyReport

        ok = True
        detail = ""
        try:
            R.check(self.restic, self.repository(name, purpose="check"), cancel=cancel)
        except R.RepositoryDamaged as exc:
            ok, detail = False, exc.message
        at = self.clock()

        def edit(state: SnapshotState) -> None:
            record = state.repository(name)
            record.last_check, record.last_check_ok = at, ok
            if not ok and record.last_snapshot_id:
                state.queue("verify", VerifyReport(repository=name, snapshot_id=record.last_snapshot_id, at=at,
                                                   files_checked=0, bytes_checked=0, ok=False,
                                                   detail=detail[:2000]).model_dump(mode="json"))

        self.state.change(edit)
        return ok

    def verify(self, name: str = "local", *, rng: random.Random | None = None,
               cancel: threading.Event | None = None) -> VerifyResult:
        """Restore a random sample of the latest snapshot into a private folder and compare it; remember and
        report the result. NotFoundError when the repository has no snapshot of this PC yet."""
        from protocol.snapshots import VerifyReport

        repository = self.repository(name, purpose="restore")
        read_only = name == "server"  # the server's restore credential reads, never locks
        found = R.snapshots(self.restic, repository, host=self.host, no_lock=read_only)
        if not found:
            raise NotFoundError(f"the {name} repository holds no snapshot of this PC yet",
                                hint="take one first: helpline snapshot now")
        workdir = self.directory / "verify"
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = sample_restore(self.restic, repository, snapshot=found[-1], files=self.policy.verify_files,
                                max_bytes=self.policy.verify_bytes, now=self.clock(), rng=rng, workdir=workdir,
                                no_lock=read_only, cancel=cancel)

        def edit(state: SnapshotState) -> None:
            record = state.repository(name)
            record.last_verify, record.last_verify_ok, record.last_verify_detail = result.at, result.ok, result.detail
            if result.ok:
                record.last_verified = result.at
            state.queue("verify", VerifyReport(
                repository=name, snapshot_id=result.snapshot_id, at=result.at, files_checked=result.files_checked,
                bytes_checked=result.bytes_checked, ok=result.ok, detail=result.detail).model_dump(mode="json"))

        self.state.change(edit)
        self.send_reports()
        return result

    # --- the schedule ---------------------------------------------------------------------------

    def due(self) -> tuple[tuple[Work, ...], datetime, str | None]:
        """The work due now, when to look again, and why due work waits (on battery), if it does."""
        found = plan(self.policy, self.state.read(), self.clock(), on_battery=self.battery(),
                     repositories=self.repositories())
        return found.work, found.next_at, found.waiting

    def run_work(self, work: Work, *, cancel: threading.Event | None = None) -> object:
        """Do one piece of scheduled work; a failure of maintenance is logged and remembered, not raised (but a
        cancellation is)."""
        if work.kind == "snapshot":
            return self.snapshot_into(work.repository, cancel=cancel)
        action = {"forget": self.forget, "prune": self.prune, "check": self.check, "verify": self.verify}[work.kind]
        try:
            return action(work.repository, cancel=cancel)
        except R.ResticCancelled:
            raise
        except HelplineError as exc:
            logger.warning("%s of the %s repository failed: %s", work.kind, work.repository, exc.message)
            at = self.clock()
            field_name = {"forget": "last_forget", "prune": "last_prune", "check": "last_check",
                          "verify": "last_verify"}[work.kind]
            # Not a success: the time is remembered so it is not retried at once, and a verify stays unproven.
            self.state.change(lambda s: setattr(s.repository(work.repository), field_name, at))
            return exc

    def run_due(self, *, cancel: threading.Event | None = None) -> list[tuple[Work, object]]:
        """Run all work due now, in order, and what falls due through it (a first snapshot makes retention and the
        checks due); report to the server; return what each piece gave. Each kind runs once per repository a pass."""
        done: list[tuple[Work, object]] = []
        ran: set[tuple[str, str]] = set()
        for _round in range(3):
            work = [w for w in self.due()[0] if (w.kind, w.repository) not in ran]
            if not work:
                break
            for item in work:
                if cancel is not None and cancel.is_set():
                    self.send_reports()
                    return done
                ran.add((item.kind, item.repository))
                done.append((item, self.run_work(item, cancel=cancel)))
        self.send_reports()
        return done

    # --- reports -------------------------------------------------------------------------------

    def send_reports(self) -> int:
        """Send the reports the server has not had yet, oldest first; return how many went. An unreachable server
        leaves them for the next check-in; a report the server refuses is dropped (and logged)."""
        from protocol.snapshots import SnapshotReport, VerifyReport

        pending = self.state.read().pending
        if not pending or not self.linked:
            return 0
        sent = 0
        try:
            with self.client() as client:
                for item in pending:
                    try:
                        if item.get("kind") == "verify":
                            client.report_verification(VerifyReport.model_validate(item["body"]))
                        else:
                            client.report_snapshot(SnapshotReport.model_validate(item["body"]))
                    except UnavailableError:
                        raise
                    except (HelplineError, ValueError) as exc:
                        logger.warning("the server refused a snapshot report: %s", exc)
                    sent += 1
        except (UnavailableError, ConfigError) as exc:
            logger.info("snapshot reports wait for the server: %s", getattr(exc, "message", exc))
        if sent:
            self.state.change(lambda s: s.pending.__delitem__(slice(0, sent)))
        return sent

    # --- listing, status and restore -------------------------------------------------------------

    def list_snapshots(self, name: str = "local") -> tuple[R.Snapshot, ...]:
        """This PC's snapshots in repository ``name``, oldest first."""
        repository = self.repository(name, purpose="restore")
        if name == "local" and not Path(repository.location).exists():
            raise R.RepositoryMissing(f"there is no restic repository at {repository.display}",
                                      command="", exit_code=None, stderr_tail="",
                                      hint="take a first snapshot: helpline snapshot now")
        return R.snapshots(self.restic, repository, host=self.host, no_lock=name == "server")

    def protection(self, home: Path | None = None) -> Protection:
        """How protected this PC is, in one state word and one sentence, from what it remembers (no restic run).

        With ``home``, how protected that home is: only runs that took it (or a folder holding it, or one in it)
        count, so one user's own snapshot never tells another user that their files are safe.
        """
        now = self.clock()
        state = self.state.read()
        records = [state.repositories.get(name, RepositoryRecord()) for name in self.repositories()]
        if home is not None:
            records = [record.for_folder(str(home)) for record in records]
        successes = [r for r in records if r.last_success is not None]
        last = max(successes, key=lambda r: r.last_success, default=None)
        verified = max((r.last_verified for r in records if r.last_verified is not None), default=None)
        failures = [r for r in records if r.last_failure is not None
                    and (r.last_success is None or r.last_failure > r.last_success)]
        failing = max(failures, key=lambda r: r.last_failure, default=None)
        if last is None:
            state_word = "failing" if failing else "never"
            words = "Not protected: no snapshot yet" + (f"; the last try failed: {failing.last_error}" if failing else "")
        else:
            snapshot_words = f"last snapshot {ago(last.last_success, now)}"
            verify_words = f"last verified restore {ago(verified, now)}" if verified else "no verified restore yet"
            stale = now - last.last_success > max(self.policy.interval * 3, timedelta(hours=24))
            if failing is not None:
                state_word = "failing"
                words = f"At risk: {snapshot_words}; the last try failed: {failing.last_error}"
            elif stale:
                state_word, words = "stale", f"At risk: {snapshot_words}; {verify_words}"
            elif verified is None or now - verified > self.policy.verify_every * 2:
                state_word, words = "unverified", f"Protected: {snapshot_words}; {verify_words}"
            else:
                state_word, words = "protected", f"Protected: {snapshot_words}; {verify_words}"
        return Protection(state_word, words, last.last_success if last else None,
                          last.last_snapshot_id if last else None, verified,
                          failing.last_failure if failing else None, failing.last_error if failing else None)

    def recorded_latest(self, name: str, path: str) -> R.Snapshot | None:
        """The latest snapshot this agent recorded in repository ``name`` that holds ``path``; None if none is."""
        record = self.state.read().repositories.get(name)
        found = None
        for item in record.recent if record is not None else ():
            try:
                snap = R.Snapshot(id=str(item["id"]), short_id=str(item["id"])[:8],
                                  time=datetime.fromisoformat(item["time"]), hostname=self.host,
                                  paths=tuple(str(p) for p in item["paths"]), tags=(R.HELPLINE_TAG,))
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry: the listing will do
            if _covers(snap, path) and (found is None or snap.time >= found.time):
                found = snap
        return found

    def find_snapshot(self, repository: R.Repository, path: str, *, snapshot: str | None = None,
                      at: datetime | None = None, no_lock: bool = False, any_host: bool = False) -> R.Snapshot:
        """The snapshot to restore ``path`` from: the one named, else the last at or before ``at``, else the latest;
        only this PC's snapshots that hold ``path`` (any host's with ``any_host``: another PC's repository)."""
        found = [s for s in R.snapshots(self.restic, repository, host=None if any_host else self.host,
                                        no_lock=no_lock) if _covers(s, path)]
        if snapshot is not None and snapshot != "latest":
            named = [s for s in found if s.id.startswith(snapshot)]
            if not named:
                raise NotFoundError(f"no snapshot {snapshot} of this PC holds {path}",
                                    hint="list them with: helpline snapshot list")
            return named[-1]
        if at is not None:
            found = [s for s in found if s.time <= at]
        if not found:
            when = f" from before {at.isoformat(timespec='minutes')}" if at is not None else ""
            raise NotFoundError(f"no snapshot{when} of this PC holds {path}",
                                hint="list them with: helpline snapshot list")
        return found[-1]

    def restore_into(self, staging: Path, original: Path, *, snapshot: str | None = None, at: datetime | None = None,
                     repository: str = "local", source: R.Repository | None = None,
                     on_progress: Callable[[R.Progress], None] | None = None,
                     cancel: threading.Event | None = None) -> tuple[R.Snapshot, Path]:
        """Restore ``original`` from the snapshot ``snapshot``/``at`` name (else its latest) into the empty private
        folder ``staging``; return the snapshot restored and where the copy is in ``staging``.

        The latest snapshot that holds the path, as this agent recorded it,
        spares a restic run (the key's scrypt and the listing); a recorded one
        restic no longer has sends the restore back to listing. ``source`` is
        another PC's repository this PC may only read (opened without a lock,
        any host's snapshots). NotFoundError when no snapshot holds the path.
        """
        repo = source or self.repository(repository, purpose="restore")
        read_only = source is not None or repository == "server"  # a restore credential reads, never locks
        recorded = None if source is not None or snapshot not in (None, "latest") or at is not None else \
            self.recorded_latest(repository, str(original))
        # Finding the snapshot only reads: no lock to write and remove.
        chosen = recorded or self.find_snapshot(repo, str(original), snapshot=snapshot, at=at, no_lock=True,
                                                any_host=source is not None)

        def restore(snap: R.Snapshot) -> None:
            R.restore(self.restic, repo, snapshot=snap.id, target=staging, includes=[str(original)],
                      no_lock=read_only, on_progress=on_progress, cancel=cancel)

        try:
            restore(chosen)
        except R.ResticCancelled:
            raise
        except HelplineError:
            if recorded is None:
                raise
            logger.info("recorded snapshot %s could not be restored; asking restic for the latest", recorded.short_id)
            chosen = self.find_snapshot(repo, str(original), no_lock=True)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            restore(chosen)
        from .verify import _restored_path

        restored = _restored_path(staging, str(original))
        if not os.path.lexists(restored):  # restic restores nothing, and says nothing, for a path not in it
            raise NotFoundError(f"{original} is not in snapshot {chosen.short_id} of "
                                f"{chosen.time.astimezone():%Y-%m-%d %H:%M %Z}",
                                hint="pick another snapshot with --at or --snapshot")
        return chosen, restored

    def restore(
        self,
        path: str | Path,
        *,
        snapshot: str | None = None,
        at: datetime | None = None,
        to: Path | None = None,
        overwrite: bool = False,
        repository: str = "local",
        source: R.Repository | None = None,
        owner: tuple[int, int] | None = None,
        on_progress: Callable[[R.Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Restored:
        """Bring ``path`` (a file or a folder) back from a snapshot; never replace anything silently.

        By default it goes beside the original as ``NAME.restored-YYYYMMDD-HHMM``
        (the snapshot's time), or into the folder ``to``; with ``overwrite`` it
        takes the original's place and what it replaced is kept as
        ``NAME.replaced-YYYYMMDD-HHMM``. ``owner`` (uid, gid) is given to every
        restored file when the agent restores for another account. ``source``
        is another PC's repository this PC may only read (a replacement
        restore): opened without a lock, any host's snapshots.
        """
        original = Path(os.path.abspath(os.path.expanduser(str(path))))
        if original == Path(original.anchor):
            raise InvalidInputError("restore a file or a folder, not the whole disk",
                                    hint="name the folder to bring back, e.g. your home folder")
        if overwrite and to is not None:
            raise InvalidInputError("--overwrite puts the file back in its place; it cannot go with --to")
        place = Path(os.path.abspath(os.path.expanduser(str(to)))) if to is not None else original.parent
        place.mkdir(parents=True, exist_ok=True)
        _sweep_restore_staging(place)
        staging = Path(tempfile.mkdtemp(prefix=owned_name(RESTORE_PREFIX), dir=place))
        os.chmod(staging, 0o700)
        try:
            chosen, restored = self.restore_into(staging, original, snapshot=snapshot, at=at, repository=repository,
                                                 source=source, on_progress=on_progress, cancel=cancel)
            if owner is not None:
                _give(restored, owner)
            final = _placed_at(original, chosen, to=place if to is not None else None, overwrite=overwrite)
            kept = None
            if overwrite and os.path.lexists(original):
                kept = _kept_at(original, self.clock())
                os.rename(original, kept)
            os.rename(restored, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Restored(chosen, str(original), final, kept)


#: A restore's staging folder, beside where the restored copy goes: ``.helpline-restore-<pid>-<random>``.
RESTORE_PREFIX = ".helpline-restore-"
#: Seconds a staging folder whose name names no process (an older Helpline's) stays: a restore may take hours.
UNOWNED_RESTORE_SECONDS = 24 * 3600.0


def _sweep_restore_staging(place: Path) -> list[Path]:
    """Remove the staging folders in ``place`` of restores that were killed or crashed (a restored copy half
    written, hidden in the person's own folder); those of restores still running stay."""
    stale = stale_folders(place, RESTORE_PREFIX, unowned_seconds=UNOWNED_RESTORE_SECONDS)
    for folder in stale:
        logger.info("removing %s, left by a restore that did not finish", folder)
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _ready_report() -> None:
    """Load the snapshot report's model and build its validator (deferred until first use otherwise)."""
    from protocol.snapshots import SnapshotReport

    SnapshotReport.model_rebuild()


def _in_background(work: Callable[[], None]) -> threading.Thread:
    """Start ``work`` (loading code) on a thread of its own, so that it overlaps a restic run instead of following
    it; join the thread before using what it loads."""
    thread = threading.Thread(target=work, name=f"helpline {work.__name__}", daemon=True)
    thread.start()
    return thread


def _stamp(when: datetime) -> str:
    """``when`` as a restored or replaced copy's name carries it: local time, to the minute."""
    return when.astimezone().strftime("%Y%m%d-%H%M")


def _placed_at(original: Path, chosen: R.Snapshot, *, to: Path | None, overwrite: bool) -> Path:
    """Where the restored copy of ``original`` goes: its own place (``overwrite``), a free name in the folder
    ``to``, else beside it as ``NAME.restored-YYYYMMDD-HHMM`` (the snapshot's time)."""
    if overwrite:
        return original
    if to is not None:
        return _free_name(to / original.name)
    return _free_name(original.with_name(f"{original.name}.restored-{_stamp(chosen.time)}"))


def _kept_at(original: Path, now: datetime) -> Path:
    """The free name ``NAME.replaced-YYYYMMDD-HHMM`` that keeps what an overwriting restore replaces."""
    return _free_name(original.with_name(f"{original.name}.replaced-{_stamp(now)}"))


def _free_name(path: Path) -> Path:
    """``path`` if nothing is there, else the first ``path-2``, ``path-3``, … that is free."""
    if not os.path.lexists(path):
        return path
    for number in range(2, 1000):
        candidate = path.with_name(f"{path.name}-{number}")
        if not os.path.lexists(candidate):
            return candidate
    raise ConflictError(f"too many earlier restores beside {path}", hint="move some of them away, or use --to DIR")


def _give(path: Path, owner: tuple[int, int]) -> None:
    """Make ``owner`` (uid, gid) own ``path`` and everything under it (links themselves, not their targets)."""
    uid, gid = owner
    os.lchown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)
