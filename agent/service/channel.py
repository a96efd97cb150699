"""The request channel: the long poll that brings engineers' requests to this PC within seconds.

One thread holds a long poll open (``GET /v1/agent/requests?wait=25``); the
server answers at once when a request is queued. Each request runs on a small
pool of worker threads (a restore waiting for its user's consent does not hold
up a snapshot), through :class:`agent.service.requests.RequestRunner`, which
checks it and runs it once. On errors (server away, network down) the channel
backs off exponentially with jitter, so a fleet that lost its server does not
come back all at once. Setting the stop event ends :meth:`RequestChannel.run`
within a second; a poll in flight is abandoned (the server holds it at most
``wait`` seconds), and a request it would have brought stays on the server
until it expires.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from agent.client import HelplineClient
from agent.service.requests import Handler, RequestRunner, consent_box, received_requests
from agent.store import AgentStore
from protocol.errors import HelplineError
from protocol.policy import PolicyStatement
from protocol.pc_requests import PcRequestKind, PcRequestState, PcRequestUpdate, SignedPcRequest

log = logging.getLogger("helpline.agent.channel")

#: Seconds the server holds a poll open when it has nothing for this PC.
POLL_WAIT = 25
#: Back-off after failed polls: the first wait, and the longest.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
#: At most this long between two polls that both succeeded (a little jitter spreads a fleet's polls).
POLL_JITTER = 0.5
#: How often a stopping channel notices its stop event.
STOP_CHECK = 0.2


class RequestChannel:
    """Brings this PC's requests from the server and runs them until ``stop_event`` is set.

    ``client_factory`` makes a client signed as this PC's agent (a fresh one
    after an error); ``handlers`` maps each kind of request this PC takes to
    the callable that does it (see agent.service.requests.Handler).
    """

    def __init__(self, client_factory: Callable[[], HelplineClient], handlers: Mapping[PcRequestKind | str, Handler],
                 stop_event: threading.Event, *, store: AgentStore | None = None, wait: int = POLL_WAIT,
                 workers: int = 4, rng: random.Random | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_event: Callable[[str, bool], None] | None = None,
                 policy: Callable[[HelplineClient], PolicyStatement | None] | None = None):
        self.client_factory = client_factory
        self.policy = policy
        self.handlers = dict(handlers)
        self.stop = stop_event
        self.store = store or AgentStore()
        self.wait = wait
        self.workers = workers
        self.rng = rng or random.Random()
        self.clock = clock
        self.failures = 0  # polls failed in a row
        self.last_error: HelplineError | None = None
        self.handled: list[tuple[str, PcRequestState]] = []  # (request id, end state), most recent last
        self.on_event = on_event or (lambda line, ok: None)
        self._local = threading.local()

    # --- running ---------------------------------------------------------------------------

    def run(self) -> None:
        """Poll and run requests until the stop event is set (returns within about a second of it)."""
        state = self.store.require()
        runner = RequestRunner(
            agent_id=state.agent_id, server_public_key=state.server_public_key,
            received=received_requests(self.store.directory), handlers=self.handlers, send=self._report,
            consent=consent_box(self.store.directory), stop=self.stop, clock=self.clock,
            policy=(lambda: self.policy(self._client())) if self.policy is not None else None,
        )
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="helpline-request")
        try:
            for waiting in runner.consent.unfinished() if runner.consent is not None else []:
                # Put before the user by an earlier run of the agent and not answered then: wait on.
                try:
                    pool.submit(self._handle, runner, SignedPcRequest.model_validate(waiting), resume=True)
                except ValueError:
                    log.warning("a waiting request in the consent folder is unreadable; it is left alone")
            while not self.stop.is_set():
                batch = self._poll_once()
                if batch is None:
                    if self.stop.wait(self.backoff()):
                        break
                    continue
                if batch:  # the poll may have followed a server key hand-over: check requests with the key pinned now
                    runner.server_public_key = self.store.require().server_public_key
                for signed in batch:
                    pool.submit(self._handle, runner, signed)
                if self.stop.wait(self.rng.uniform(0, POLL_JITTER)):
                    break
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def start(self) -> threading.Thread:
        """Run the channel on a daemon thread of its own; return that thread."""
        thread = threading.Thread(target=self.run, name="helpline-request-channel", daemon=True)
        thread.start()
        return thread

    def backoff(self) -> float:
        """Seconds to wait after ``failures`` failed polls in a row: doubling from 1 s to 60 s, with jitter."""
        ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, self.failures - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    # --- one poll --------------------------------------------------------------------------------

    def _poll_once(self) -> list[SignedPcRequest] | None:
        """The requests of one long poll; None after an error (counted) or when stopping."""
        outcome: dict[str, object] = {}
        done = threading.Event()

        def poll() -> None:
            try:
                client = self._client()
                outcome["batch"] = client.next_pc_requests(wait=self.wait)
            except BaseException as exc:  # reported back to the loop below
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=poll, name="helpline-request-poll", daemon=True).start()
        while not done.wait(STOP_CHECK):
            if self.stop.is_set():
                return None  # the poll is abandoned; it ends with its wait
        error = outcome.get("error")
        if error is not None:
            self.failures += 1
            self._drop_client()
            if isinstance(error, HelplineError):
                self.last_error = error
                log.warning("polling for requests failed (%d in a row): %s", self.failures, error.message)
            else:
                log.error("polling for requests failed unexpectedly", exc_info=error)
            return None
        self.failures = 0
        self.last_error = None
        return list(outcome["batch"])  # type: ignore[arg-type]

    def _handle(self, runner: RequestRunner, signed: SignedPcRequest, *, resume: bool = False) -> None:
        request_id = str(signed.payload.get("id", "?"))
        kind, who = str(signed.payload.get("kind", "?"))[:20], str(signed.payload.get("requested_by", "?"))[:64]
        try:
            self.on_event(f"request {request_id[:8]} ({kind}) from {who}: received", True)
            end = runner.resume(signed) if resume else runner.handle(signed)
            self.handled.append((request_id, end))
            self.on_event(f"request {request_id[:8]} ({kind}) from {who}: {end.value}",
                          end in (PcRequestState.DONE, PcRequestState.WAITING_CONSENT, PcRequestState.EXPIRED))
        except Exception:  # the runner reports its own failures; this is a bug in it, never the channel's end
            log.exception("handling request %s failed", request_id)
        finally:
            self._drop_client()

    # --- clients, one per thread ------------------------------------------------------------------

    def _client(self) -> HelplineClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.client_factory()
        return client

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection must not hide why it broke
                pass

    def _report(self, request_id: str, update: PcRequestUpdate) -> None:
        self._client().update_pc_request(request_id, update)

