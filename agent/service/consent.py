"""The user's say on an engineer's request: the agent asks, the user approves or refuses with `helpline requests`.

The agent writes a request that needs consent (a restore, fresh diagnostics)
as a small JSON file in ``<agent folder>/requests/waiting/`` and waits; the
user's `helpline requests approve ID` (or ``refuse``) writes the answer to
``requests/answers/``. Both folders are the agent identity's own (0700): on a
PC without the service they belong to the user; where the service owns the
identity, the user's commands reach them through its local socket. An
unanswered request expires with the request, and nothing runs.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typing import TYPE_CHECKING

from agent.paths import write_private
from protocol.errors import AmbiguousError, ConfigError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the user's commands read the waiting requests without loading the wire schemas
    from protocol.pc_requests import PcRequest

WAITING = "waiting"
ANSWERS = "answers"
_POLL_SECONDS = 0.25
#: How far this PC's clock may be from the server's: protocol.pc_requests.CLOCK_SKEW (kept light to import here).
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class WaitingRequest:
    """A request as the user sees it before answering: who asks, for which ticket, what it would do, until when."""

    id: str
    kind: str
    requested_by_name: str
    requested_by: str
    ticket: str | None
    params: dict
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, request: PcRequest) -> WaitingRequest:
        return cls(request.id, request.kind.value, request.requested_by_name, request.requested_by, request.ticket,
                   dict(request.params), request.created_at, request.expires_at)

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "requested_by_name": self.requested_by_name,
                "requested_by": self.requested_by, "ticket": self.ticket, "params": self.params,
                "created_at": self.created_at.isoformat(), "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict) -> WaitingRequest:
        return cls(str(data["id"]), str(data["kind"]), str(data["requested_by_name"]), str(data["requested_by"]),
                   data.get("ticket"), dict(data.get("params") or {}), datetime.fromisoformat(data["created_at"]),
                   datetime.fromisoformat(data["expires_at"]))


@dataclass(frozen=True)
class Answer:
    approve: bool
    by: str
    at: datetime


class ConsentBox:
    """The waiting requests and the user's answers, kept in ``directory`` (the agent folder's ``requests``)."""

    def __init__(self, directory: Path, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 skew: timedelta = CLOCK_SKEW):
        self.directory = Path(directory)
        self.clock = clock
        self.skew = skew

    def _file(self, folder: str, request_id: str) -> Path:
        if not request_id or any(c not in "0123456789abcdef-" for c in request_id):
            raise InvalidInputError(f"{request_id[:40]!r} is not a request id.", hint="See the ids with `helpline requests`.")
        return self.directory / folder / f"{request_id}.json"

    # --- the agent's side ------------------------------------------------------------------

    def ask(self, request: PcRequest, signed: dict | None = None) -> None:
        """Put ``request`` before the user; ``signed`` (the request as the server signed it) lets an agent that
        restarts pick the question up again (:meth:`unfinished`). Asking again keeps an answer already given."""
        question = self._file(WAITING, request.id)
        if not question.exists():
            self._file(ANSWERS, request.id).unlink(missing_ok=True)  # an answer left from nothing asked is no answer
        body = WaitingRequest.of(request).to_json()
        if signed is not None:
            body["signed"] = signed
        write_private(question, json.dumps(body).encode())

    def unfinished(self) -> list[dict]:
        """The signed requests put before the user that an earlier run of the agent did not see answered."""
        folder = self.directory / WAITING
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        found = []
        for name in names:
            try:
                signed = json.loads((folder / name).read_text(encoding="utf-8")).get("signed")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(signed, dict):
                found.append(signed)
        return found

    def answer_for(self, request_id: str) -> Answer | None:
        try:
            data = json.loads(self._file(ANSWERS, request_id).read_text(encoding="utf-8"))
            return Answer(bool(data["approve"]), str(data.get("by", "")), datetime.fromisoformat(data["at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return Answer(False, "", self.clock())  # an unreadable answer is no consent

    def wait(self, request: PcRequest, stop: threading.Event, *, poll: float = _POLL_SECONDS,
             until: datetime | None = None) -> str:
        """Wait for the user's answer to ``request``: "approved", "refused", "expired", "timed_out" (nobody answered
        by ``until``, the group policy's limit) or "stopped" (``stop`` set).

        The question is withdrawn, unless the agent is stopping: then it stays
        for the next run of the agent, which waits on (:meth:`unfinished`).
        """
        outcome = "stopped"
        try:
            while True:
                answer = self.answer_for(request.id)
                if answer is not None:
                    outcome = "approved" if answer.approve else "refused"
                    return outcome
                if self.clock() >= request.expires_at + self.skew:
                    outcome = "expired"
                    return outcome
                if until is not None and self.clock() >= until:
                    outcome = "timed_out"
                    return outcome
                if stop.wait(poll):
                    return outcome
        finally:
            if outcome != "stopped":
                self.withdraw(request.id)

    def withdraw(self, request_id: str) -> None:
        self._file(WAITING, request_id).unlink(missing_ok=True)
        self._file(ANSWERS, request_id).unlink(missing_ok=True)

    # --- the user's side -------------------------------------------------------------------

    def waiting(self) -> list[WaitingRequest]:
        """The requests that wait for the user's answer and have not expired, oldest first."""
        folder = self.directory / WAITING
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise ConfigError(f"Cannot read the waiting requests in {folder}: {exc.strerror}.") from exc
        found = []
        now = self.clock()
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                item = WaitingRequest.from_json(json.loads((folder / name).read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if item.expires_at + self.skew > now and self.answer_for(item.id) is None:
                found.append(item)
        return sorted(found, key=lambda w: (w.created_at, w.id))

    def find(self, reference: str) -> WaitingRequest:
        """The waiting request ``reference`` names (its id or a unique start of it)."""
        reference = reference.strip().lower()
        matches = [w for w in self.waiting() if w.id == reference or (len(reference) >= 4 and w.id.startswith(reference))]
        if not matches:
            raise NotFoundError(f"No request {reference[:40]!r} waits for your answer on this PC.",
                                hint="See the waiting ones with `helpline requests`.")
        if len(matches) > 1:
            raise AmbiguousError(f"{reference!r} matches {len(matches)} waiting requests.", hint="Give more of the id.")
        return matches[0]

    def answer(self, reference: str, *, approve: bool, by: str) -> WaitingRequest:
        """Record the user's answer to the waiting request ``reference`` names; return it."""
        item = self.find(reference)
        body = {"approve": approve, "by": by, "at": self.clock().isoformat()}
        write_private(self._file(ANSWERS, item.id), json.dumps(body).encode())
        return item
