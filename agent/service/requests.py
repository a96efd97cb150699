"""Engineers' requests on this PC: checked, run at most once, and reported on.

A request runs only if the server key this PC pinned signed it, it names this
PC, it has not expired (a clock-skew allowance either side) and this PC never
received it before: received ids and nonces are kept in a file (0600) until
the request could not be accepted anyway, so a replayed request is refused,
also after a restart. A restore or fresh diagnostics waits for the user's
consent (agent.service.consent) unless the server's signed request says the
admin allows unattended restores. Then the request's handler runs and its
outcome is reported to the server; a handler never gets a request that failed
any of these checks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from agent.once import OnceRecord
from agent.service.consent import ConsentBox
from protocol.errors import AuthError, HelplineError
from protocol.policy import PolicyStatement
from protocol.pc_requests import (
    CLOCK_SKEW,
    PcRequest,
    PcRequestKind,
    PcRequestState,
    PcRequestUpdate,
    SignedPcRequest,
    verify_pc_request,
)

log = logging.getLogger("helpline.agent.requests")

RECEIVED_FILE = "received-requests.json"
#: Kinds that wait for the user's consent unless the group policy (or, for restores, the server-wide setting) lifts it.
NEEDS_CONSENT = frozenset({PcRequestKind.RESTORE, PcRequestKind.DIAGNOSTICS})
_DETAIL = 2000


class Report(Protocol):
    """What a handler calls to say how far it is: ``report(progress=0.4, detail="12 of 30 files")``."""

    def __call__(self, progress: float | None = None, detail: str = "") -> None: ...


Handler = Callable[[PcRequest, Report], "dict[str, Any] | None"]
#: How an outcome reaches the server: ``send(request_id, update)``; errors are the sender's to swallow or raise.
Send = Callable[[str, PcRequestUpdate], object]


class ReceivedRequests:
    """The ids and nonces of requests this PC received, persisted in ``directory`` so each runs at most once."""

    def __init__(self, directory: Path, *, skew: timedelta = CLOCK_SKEW):
        self.path = Path(directory) / RECEIVED_FILE
        self.skew = skew
        self._record = OnceRecord(self.path, id_key="ids", skew=skew,
                                  replayed="This request was received before; a request runs once.",
                                  unreadable_hint="Remove it only if no request is running and none was received "
                                                  "in the last days.")

    def claim(self, request: PcRequest, *, now: datetime) -> None:
        """Record ``request`` as received; AuthError if its id or nonce was received before."""
        self._record.claim(request.id, request.nonce, until=request.expires_at, now=now)

    def __contains__(self, request_id: object) -> bool:
        return isinstance(request_id, str) and self._record.seen(request_id)


class RequestRunner:
    """Checks each signed request and runs it with its kind's handler, reporting every step through ``send``."""

    def __init__(self, *, agent_id: str, server_public_key: str, received: ReceivedRequests,
                 handlers: Mapping[PcRequestKind | str, Handler], send: Send, consent: ConsentBox | None = None,
                 stop: threading.Event | None = None, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 skew: timedelta = CLOCK_SKEW, policy: Callable[[], PolicyStatement | None] | None = None):
        self.agent_id = agent_id
        self.policy = policy or (lambda: None)
        self.server_public_key = server_public_key
        self.received = received
        self.handlers = {PcRequestKind(k): v for k, v in handlers.items()}
        self.send = send
        self.consent = consent
        self.stop = stop or threading.Event()
        self.clock = clock
        self.skew = skew

    def _send(self, request_id: str, state: PcRequestState, *, progress: float | None = None, detail: str = "",
              result: dict[str, Any] | None = None) -> None:
        update = PcRequestUpdate(state=state, progress=progress, detail=detail[:_DETAIL], result=result)
        try:
            self.send(request_id, update)
        except HelplineError as exc:  # the outcome stands on this PC; the server marks silence itself
            log.warning("could not report request %s as %s: %s", request_id, state.value, exc.message)

    def handle(self, signed: SignedPcRequest) -> PcRequestState:
        """Check ``signed``, ask for consent if it needs it, run it; return the state it ended in (as reported)."""
        try:
            request = verify_pc_request(signed, pinned_server_key=self.server_public_key, agent_id=self.agent_id,
                                        now=self.clock(), skew=self.skew)
            self.received.claim(request, now=self.clock())
        except HelplineError as exc:
            claimed_id = signed.payload.get("id")
            log.warning("refused a request: %s", exc.message)
            # A forged or misaddressed request may name a real one: the server keeps only reports on this PC's own.
            if isinstance(claimed_id, str) and len(claimed_id) == 36:
                self._send(claimed_id, PcRequestState.REFUSED, detail=f"Refused by the PC: {exc.message}")
            return PcRequestState.REFUSED
        return self.run(request, signed=signed)

    def resume(self, signed: SignedPcRequest) -> PcRequestState:
        """Wait on for the user's answer to a request an earlier run of this agent received and put before them.

        It is checked again (signature, this PC, expiry) and must be in the
        record of received requests; it is not claimed again, since it is the
        same request continuing, never a second run.
        """
        try:
            request = verify_pc_request(signed, pinned_server_key=self.server_public_key, agent_id=self.agent_id,
                                        now=self.clock(), skew=self.skew)
        except HelplineError as exc:
            log.warning("dropped a waiting request: %s", exc.message)
            if self.consent is not None and isinstance(signed.payload.get("id"), str):
                try:
                    self.consent.withdraw(signed.payload["id"])
                except HelplineError:
                    pass
            return PcRequestState.REFUSED
        if request.id not in self.received:
            log.warning("dropped a waiting request this PC has no record of receiving: %s", request.id)
            if self.consent is not None:
                self.consent.withdraw(request.id)
            return PcRequestState.REFUSED
        return self.run(request, signed=signed, resumed=True)

    def run(self, request: PcRequest, *, signed: SignedPcRequest | None = None, resumed: bool = False) -> PcRequestState:
        """Run a request that passed the checks (consent first where it needs it; ``signed`` is kept with the
        question so that a restarted agent can wait on; ``resumed``: it is that restarted agent)."""
        handler = self.handlers.get(request.kind)
        if handler is None:
            self._send(request.id, PcRequestState.FAILED, detail=f"This PC cannot do {request.kind.value} requests.")
            return PcRequestState.FAILED
        under, legacy, wait_until = None, False, None
        if request.kind in NEEDS_CONSENT:
            under, legacy, wait_until = self._unattended(request)
        if request.kind in NEEDS_CONSENT and under is None and not legacy:
            if self.consent is None:
                self._send(request.id, PcRequestState.REFUSED, detail="Nobody on this PC can agree to it.")
                return PcRequestState.REFUSED
            self.consent.ask(request, signed=signed.model_dump() if signed is not None else None)
            if not resumed:
                self._send(request.id, PcRequestState.WAITING_CONSENT, detail="Waiting for the user to agree.")
            outcome = self.consent.wait(request, self.stop, until=wait_until)
            if outcome == "refused":
                self._send(request.id, PcRequestState.REFUSED, detail="The user refused it.")
                return PcRequestState.REFUSED
            if outcome == "timed_out":
                self._send(request.id, PcRequestState.REFUSED,
                           detail="Nobody on this PC answered in the time the group's policy gives the user.")
                return PcRequestState.REFUSED
            if outcome != "approved":  # expired (the server marks it) or this agent is stopping
                return PcRequestState.EXPIRED if outcome == "expired" else PcRequestState.WAITING_CONSENT
        if self.clock() >= request.expires_at + self.skew:
            return PcRequestState.EXPIRED
        how = f" unattended under policy version {under}" if under is not None else ""
        self._send(request.id, PcRequestState.RUNNING, progress=0.0, detail=f"Started{how}.")

        def report(progress: float | None = None, detail: str = "") -> None:
            if progress is not None:
                progress = min(1.0, max(0.0, float(progress)))
            self._send(request.id, PcRequestState.RUNNING, progress=progress, detail=detail)

        try:
            result = handler(request, report)
        except HelplineError as exc:
            self._send(request.id, PcRequestState.FAILED, detail=exc.message + (f" {exc.hint}" if exc.hint else ""))
            return PcRequestState.FAILED
        except Exception as exc:  # a handler's bug fails its request, never the agent
            log.exception("request %s failed", request.id)
            self._send(request.id, PcRequestState.FAILED, detail=f"Unexpected error on the PC ({type(exc).__name__}).")
            return PcRequestState.FAILED
        result = dict(result or {})
        if under is not None:
            result["unattended_policy_version"] = under
        self._send(request.id, PcRequestState.DONE, progress=1.0, detail=f"Done{how}.", result=result)
        return PcRequestState.DONE

    def _unattended(self, request: PcRequest) -> tuple[int | None, bool, datetime | None]:
        """How a request that needs consent may run: (the policy version it runs unattended under, or None; whether
        the server-wide unattended restore setting lets it run; how long it waits for the user at most).

        With a group policy, the policy this PC holds (checked in with the
        server first) decides, and the server must have signed the request as
        unattended too; without one, only the server-wide setting for restores.
        A shell or session never comes here: no policy can name one.
        """
        try:
            statement = self.policy()
        except Exception:  # a failed check-in: the policy kept on this PC still decides (checked when read)
            log.exception("reading this PC's group policy failed")
            statement = None
        if statement is None:
            return None, bool(request.unattended and request.kind == PcRequestKind.RESTORE), None
        body = statement.policy()
        wait_until = None
        if body.consent is not None and body.consent.wait_minutes is not None:
            wait_until = request.created_at + timedelta(minutes=body.consent.wait_minutes)
        if request.unattended and body.allows_unattended(request.kind.value):
            return statement.version, False, wait_until
        return None, False, wait_until


def received_requests(directory: Path) -> ReceivedRequests:
    """The record of received requests kept in the agent folder ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return ReceivedRequests(directory)


def consent_box(directory: Path) -> ConsentBox:
    """The consent folder (``requests``) of the agent folder ``directory`` (where ``ThisPC`` looks too)."""
    return ConsentBox(Path(directory) / "requests")

