"""``helpline agent run``: the agent's long-running loop.

Each pass runs the snapshot work that is due (snapshots, retention, prune,
check, sample restores; see :mod:`agent.snapshots.schedule`) and checks in
with the server by sending what it has not had yet; then it sleeps until the
next work falls due, waking at least every ``max_sleep`` seconds so a PC back
from sleep catches up at once. SIGTERM and Ctrl-C set one stop event: the
sleep ends, and a restic run under way gets SIGINT (through the executor's
cancel), so it removes its own lock and leaves none stale behind.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agent.client import ServerTooOldError
from agent.group_policy import GroupPolicy
from protocol.errors import ConfigError, HelplineError
from protocol.policy import PolicyStatement

from ..snapshots import restic as R
from ..snapshots.handlers import request_handlers
from ..snapshots.jobs import Snapshots
from ..snapshots.schedule import Work
from .channel import RequestChannel
from .diagnostics import service_handlers

logger = logging.getLogger("helpline.service")

#: Seconds the loop sleeps at most between passes (a PC waking from sleep catches up within this).
MAX_SLEEP = 60.0
#: Seconds it sleeps at least, so a failing pass never spins.
MIN_SLEEP = 5.0


@dataclass(frozen=True)
class Event:
    """Something the service did, for whoever runs it to show: ``what`` in words, and the work it was."""

    at: datetime
    what: str
    work: Work | None = None
    ok: bool = True


def describe(work: Work, outcome: object) -> tuple[str, bool]:
    """One line for a piece of work and what it gave."""
    if isinstance(outcome, HelplineError):
        return f"{work.kind} of the {work.repository} repository failed: {outcome.message}", False
    if work.kind == "snapshot":
        run = outcome
        if run.status == "failed":
            return f"snapshot into the {work.repository} repository failed: {run.error}", False
        summary = run.summary
        line = (f"snapshot {run.snapshot_id} into the {work.repository} repository ({work.reason}): "
                f"{summary.files_new} new, {summary.files_changed} changed files")
        return (line + f"; {run.warnings[0]}" if run.status == "partial" else line), True
    if work.kind == "verify":
        return f"sample restore from the {work.repository} repository: {'ok' if outcome.ok else 'FAILED'}: " \
               f"{outcome.detail}", bool(outcome.ok)
    if work.kind == "check":
        return f"check of the {work.repository} repository: {'sound' if outcome else 'ERRORS FOUND'}", bool(outcome)
    if work.kind == "forget":
        return f"retention on the {work.repository} repository: {len(outcome.removed)} snapshot(s) forgotten", True
    return f"{work.kind} of the {work.repository} repository done", True


class AgentService:
    """The loop over one PC's :class:`~agent.snapshots.jobs.Snapshots`, stopped by ``stop``.

    ``channel`` (optional) is started in its own thread for the loop's lifetime
    and must end within a second or so of ``stop`` being set.
    """

    def __init__(self, snapshots: Snapshots, *, stop: threading.Event | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 channel: Callable[[threading.Event], None] | None = None,
                 max_sleep: float = MAX_SLEEP, check_in: Callable[[], object] | None = None):
        self.snapshots = snapshots
        self.check_in = check_in
        self.stop = stop or threading.Event()
        self.on_event = on_event or (lambda event: None)
        self.channel = channel
        self.max_sleep = max_sleep

    def _tell(self, what: str, work: Work | None = None, ok: bool = True) -> None:
        (logger.info if ok else logger.warning)("%s", what)
        self.on_event(Event(self.snapshots.clock(), what, work, ok))

    def run_pass(self) -> list[tuple[Work, object]]:
        """Run the work due now and check in; return what ran. A cancelled run ends the pass (the stop is set)."""
        if self.check_in is not None:
            try:
                self.check_in()
            except HelplineError as exc:  # the server away: the policy kept on this PC stays in force
                self._tell(f"policy check-in failed: {exc.message}", ok=False)
        try:
            done = self.snapshots.run_due(cancel=self.stop)
        except R.ResticCancelled:
            self._tell("stopped: the restic run under way was cancelled and removed its lock")
            return []
        for work, outcome in done:
            line, ok = describe(work, outcome)
            self._tell(line, work, ok)
        return done

    def serve(self, *, once: bool = False) -> None:
        """Run passes until stopped (or one pass, ``once``). A bad policy raises ConfigError before anything runs."""
        self.snapshots.policy  # noqa: B018 - read and check it up front: a bad one is the admin's to fix now
        thread = None
        if self.channel is not None and not once:
            thread = threading.Thread(target=self.channel, args=(self.stop,), name="request-channel", daemon=True)
            thread.start()
        try:
            while not self.stop.is_set():
                try:
                    self.run_pass()
                except ConfigError:
                    raise
                except HelplineError as exc:
                    self._tell(f"snapshot work failed: {exc.message}", ok=False)
                if once or self.stop.is_set():
                    break
                _work, next_at, waiting = self.snapshots.due()
                if waiting:
                    self._tell(f"waiting: {waiting}")
                delay = (next_at - self.snapshots.clock()).total_seconds()
                self.stop.wait(min(self.max_sleep, max(MIN_SLEEP, delay)))
        finally:
            self.stop.set()
            if thread is not None:
                thread.join(timeout=10)


def agent_service(snapshots: Snapshots, *, stop: threading.Event,
                  on_event: Callable[[Event], None] | None = None) -> AgentService:
    """The service of this PC: the snapshot loop, and, when the PC is linked to a server, the request channel that
    brings engineers' requests (snapshot now, restore, browse, diff) to the handlers of :mod:`agent.snapshots`."""
    channel = None
    service = AgentService(snapshots, stop=stop, on_event=on_event)
    if snapshots.linked:
        handlers = {**request_handlers(snapshots, cancel=stop), **service_handlers(snapshots.store)}
        group = GroupPolicy(snapshots.store.directory)
        lock = threading.Lock()

        server_too_old: list[str] = []  # said once: a server without group policies stays without them for a while

        def refresh_policy(client) -> PolicyStatement | None:
            """Check in with the server; apply a new group policy it hands over; return the one now run.

            A server too old for group policies is told once, and not asked
            again for the life of this service; the policy kept stays in force.
            """
            with lock:
                if server_too_old:
                    return group.held()
                try:
                    statement, changed = group.check_in(client)
                except ServerTooOldError as exc:
                    server_too_old.append(exc.message)
                    service._tell(f"{exc.message} No group policy reaches this PC until then.", ok=False)
                    return group.held()
                except HelplineError as exc:  # the server away: the policy kept on this PC decides meanwhile
                    service._tell(f"policy check-in failed: {exc.message}", ok=False)
                    return group.held()
                if changed:
                    snapshots.reload_policy()
                    service._tell(f"now running policy version {statement.version} of group {statement.group}"
                                  if statement is not None else "no group policy any more: this PC's own settings")
                return statement

        def check_in() -> None:
            with snapshots.client() as client:
                refresh_policy(client)

        def channel(stop_event: threading.Event) -> None:
            RequestChannel(snapshots.new_client, handlers, stop_event, store=snapshots.store,
                           on_event=lambda line, ok: service._tell(line, ok=ok), policy=refresh_policy).run()

        service.channel = channel
        service.check_in = check_in
    return service


def stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Make SIGTERM and SIGINT (Ctrl-C) set ``stop`` instead of killing the process; return a function that puts
    the previous handlers back. Call from the main thread."""
    previous = {}

    def handler(signum, frame):  # noqa: ARG001 - the signal module's calling convention
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore
