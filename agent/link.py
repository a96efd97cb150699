"""Linking this PC to a Helpline server: enrollment, pairing, self-service tickets, status."""

from __future__ import annotations

from pathlib import Path

from agent import identity
from agent.client import HelplineClient
from agent.http import normalize_url
from agent.state import AgentState, accept_credential, load_key, load_state, require_state, save_state
from protocol import pairing, signing
from protocol.errors import ConfigError
from protocol.schemas import AgentCredential, AgentTicket, EnrollRequest, PairRequest, SelfServiceRequest, SelfServiceResponse, parse_input
from protocol.tickets import parse_ticket_ref


def _remember_ticket(state: AgentState, number: str) -> None:
    if number in state.tickets:
        state.tickets.remove(number)
    state.tickets.append(number)


def _on(previous: AgentState | None, server_url: str) -> AgentState | None:
    """The saved state if it belongs to ``server_url``: its credential and pinned key count only there."""
    return previous if previous is not None and previous.server_url == server_url else None


def _state_after(
    server_url: str, answer: AgentCredential, previous: AgentState | None, *, enrolled: bool | None = None
) -> AgentState:
    prior = _on(previous, server_url)
    return AgentState(
        server_url=server_url,
        agent_id=answer.agent_id,
        credential=answer.credential or (prior.credential if prior else ""),
        server_public_key=answer.server_public_key,
        enrolled=enrolled if enrolled is not None else bool(prior and prior.enrolled),
        group=answer.group,
        tickets=list(prior.tickets) if prior else [],
    )


def _pinned(previous: AgentState | None, server_url: str) -> str | None:
    prior = _on(previous, server_url)
    return prior.server_public_key if prior else None


def _credential(previous: AgentState | None, server_url: str) -> str | None:
    prior = _on(previous, server_url)
    return (prior.credential or None) if prior else None


def enroll(server_url: str, token: str, *, expected_fingerprint: str | None = None, directory: Path | None = None) -> AgentState:
    """Enroll this PC with a bootstrap token; keep the credential and pin the server key.

    Enrolling again (same key) updates the same agent instead of adding a twin.
    """
    url = normalize_url(server_url)
    key = load_key(directory)
    previous = load_state(directory)
    me = identity.describe(key)
    payload = signing.proof_payload("enroll", "token", token, me.model_dump())
    body = parse_input(EnrollRequest, token=token, identity=me, signature=signing.sign(key, payload))
    with HelplineClient.connect(url) as client:
        answer = client.enroll(body)
    accept_credential(key, answer, pinned=_pinned(previous, url), expected_fingerprint=expected_fingerprint)
    state = _state_after(url, answer, previous, enrolled=True)
    save_state(state, directory)
    return state


def _server_for(server_url: str | None, previous: AgentState | None) -> str:
    if server_url:
        return normalize_url(server_url)
    if previous is not None:
        return previous.server_url
    raise ConfigError("This PC does not know its Helpline server yet.",
                      hint="Add --server URL (your support team tells you the address).")


def pair(code: str, *, server_url: str | None = None, expected_fingerprint: str | None = None,
         directory: Path | None = None) -> tuple[AgentState, AgentTicket]:
    """Link this PC to the ticket behind a one-time pairing code."""
    canonical = pairing.normalize(code)  # a typo fails here, without spending a rate-limited attempt
    previous = load_state(directory)
    url = _server_for(server_url, previous)
    key = load_key(directory)
    me = identity.describe(key)
    payload = signing.proof_payload("pair", "code", canonical, me.model_dump())
    token = _credential(previous, url)
    body = parse_input(PairRequest, code=canonical, identity=me, signature=signing.sign(key, payload))
    with HelplineClient.connect(url, token) as client:
        answer = client.pair(body)
    accept_credential(key, answer.agent, pinned=_pinned(previous, url), expected_fingerprint=expected_fingerprint)
    state = _state_after(url, answer.agent, previous)
    _remember_ticket(state, answer.ticket.number)
    save_state(state, directory)
    return state, answer.ticket


def request_help(title: str, *, description: str = "", requester: str = "", server_url: str | None = None,
                 directory: Path | None = None) -> tuple[AgentState, SelfServiceResponse]:
    """Open a ticket from this PC (when the server allows it) and link the PC to it."""
    previous = load_state(directory)
    url = _server_for(server_url, previous)
    key = load_key(directory)
    token = _credential(previous, url)
    body = parse_input(SelfServiceRequest, title=title, description=description, requester=requester)
    if token is None:
        me = identity.describe(key)
        # Signed as the server reads it: the title after validation (surrounding spaces removed).
        proof = signing.sign(key, signing.proof_payload("self-service", "title", body.title, me.model_dump()))
        body = body.model_copy(update={"identity": me, "signature": proof})
    with HelplineClient.connect(url, token) as client:
        answer = client.request_help(body)
    if answer.agent is not None:
        accept_credential(key, answer.agent, pinned=_pinned(previous, url), expected_fingerprint=None)
        state = _state_after(url, answer.agent, previous)
    else:
        state = previous
    _remember_ticket(state, answer.ticket.number)
    save_state(state, directory)
    return state, answer


def my_tickets(directory: Path | None = None, number: str | None = None) -> list[AgentTicket]:
    """The tickets this PC is linked to, as the server has them now (one, if ``number``: any ticket reference)."""
    wanted = parse_ticket_ref(number) if number else None
    state = require_state(directory)
    with HelplineClient.connect(state.server_url, state.credential) as client:
        if wanted is not None:
            return [client.my_ticket(wanted)]
        return client.my_tickets()
