"""Linking this PC to a Helpline server: enrollment, pairing, self-service tickets, status.

These run in the process of whoever calls them, on the identity in an
:class:`~agent.store.AgentStore`; user-facing commands reach them through
:func:`agent.local.this_pc`, so that a PC with the agent service can answer
the same calls from the service instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import identity
from agent.client import HelplineClient
from agent.http import AgentSigner, normalize_url
from agent.store import AgentState, AgentStore
from protocol import key_handover, pairing, signing
from protocol.errors import AuthError, ConfigError, HelplineError, InvalidInputError
from protocol.schemas import AgentCredential, AgentStatus, AgentTicket, EnrollRequest, PairRequest, SelfServiceRequest, SelfServiceResponse, parse_input
from protocol.tickets import is_open, parse_ticket_ref, short_title, ticket_label


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
        pending=answer.status == AgentStatus.PENDING,
    )


def _pinned(previous: AgentState | None, server_url: str) -> str | None:
    prior = _on(previous, server_url)
    return prior.server_public_key if prior else None


def _trusted_key(client: HelplineClient, store: AgentStore, previous: AgentState | None, server_url: str) -> str | None:
    """The server key this PC trusts for ``server_url`` now: the pinned one, or the key the server's hand-overs
    lead to from it (then pinned for good), so a rotated server key needs no new enrollment.

    None when this PC has no link to ``server_url`` yet.
    """
    pinned = _pinned(previous, server_url)
    if pinned is None:
        return None
    published = client.server_info().public_key  # a signed connection follows the hand-overs on this answer already
    pinned = client.pinned_server_key or pinned
    if published != pinned:
        followed = key_handover.follow(pinned, client.key_handovers(), datetime.now(UTC))
        if followed == published:
            pinned = followed
            if previous is not None:
                store.repin(server_url, previous.agent_id, followed)
    return pinned


def _signer(store: AgentStore, previous: AgentState | None, server_url: str) -> AgentSigner | None:
    """How to talk to ``server_url`` as this PC's agent, if it is the server this PC is linked to (else None).

    Only there is the agent id known and the server key pinned; with any other
    server the PC starts afresh and sends nothing of its old link.
    """
    prior = _on(previous, server_url)
    return store.signer(prior) if prior and prior.agent_id and prior.server_public_key else None


def accept_credential(
    key: Ed25519PrivateKey, answer: AgentCredential, *, pinned: str | None, expected_fingerprint: str | None
) -> None:
    """Check that the server's answer is signed by the key we trust; raise otherwise.

    ``pinned`` is the server key saved at an earlier enrollment or pairing;
    ``expected_fingerprint`` is one an admin handed out of band. Without
    either, the first key seen is trusted and pinned.
    """
    own = signing.public_key_b64(key)
    payload = signing.agent_binding_payload(answer.agent_id, own)
    if not signing.verify(answer.server_public_key, payload, answer.server_signature):
        raise AuthError("The server's answer is not signed by its key.",
                            hint="Something between this PC and the server altered it; do not continue on this network.")
    check_server_key(answer.server_public_key, pinned=pinned, expected_fingerprint=expected_fingerprint)


def check_server_key(public_key: str, *, pinned: str | None, expected_fingerprint: str | None) -> None:
    """Raise AuthError (a trust failure, exit status 4) unless ``public_key`` is the server key this PC expects."""
    got = signing.fingerprint(public_key)
    if expected_fingerprint and got != expected_fingerprint.strip():
        raise AuthError(f"The server's key is {got}, not the expected {expected_fingerprint}.",
                        hint="Check the address; ask your administrator for the server's fingerprint.")
    if pinned and pinned != public_key:
        raise AuthError(
            f"The server's key changed (now {got}).",
            hint="If your administrator replaced the server, remove the agent state and enroll again; otherwise stop.",
        )


def _check_before_spending(client: HelplineClient, *, pinned: str | None, expected_fingerprint: str | None) -> None:
    """Check the server's published key before a one-time secret (enrollment token, pairing code) is sent.

    A server that is not the expected one is refused before it can use up the
    secret; the signed answer is still checked afterwards (a key published here
    proves nothing by itself).
    """
    if pinned or expected_fingerprint:
        check_server_key(client.server_info().public_key, pinned=pinned, expected_fingerprint=expected_fingerprint)


def enroll(server_url: str, token: str, *, expected_fingerprint: str | None = None, directory: Path | None = None) -> AgentState:
    """Enroll this PC with a bootstrap token; keep the credential and pin the server key.

    Enrolling again (same key) updates the same agent instead of adding a twin.
    A new key on a PC that looks like an enrolled one (a re-imaged PC, or one
    claiming another's machine id and hostname) is enrolled as a new agent that
    waits for an administrator's approval (``state.pending``).
    """
    url = normalize_url(server_url)
    store = AgentStore(directory)
    key = store.key()
    previous = store.load()
    me = identity.describe(key)
    payload = signing.proof_payload("enroll", "token", token, me.model_dump())
    body = parse_input(EnrollRequest, token=token, identity=me, signature=signing.sign(key, payload))
    with HelplineClient.connect(url) as client:
        pinned = _trusted_key(client, store, previous, url)
        _check_before_spending(client, pinned=pinned, expected_fingerprint=expected_fingerprint)
        answer = client.enroll(body)
    accept_credential(key, answer, pinned=pinned, expected_fingerprint=expected_fingerprint)
    state = _state_after(url, answer, previous, enrolled=True)
    store.save(state)
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
    store = AgentStore(directory)
    previous = store.load()
    url = _server_for(server_url, previous)
    key = store.key()
    me = identity.describe(key)
    payload = signing.proof_payload("pair", "code", canonical, me.model_dump())
    body = parse_input(PairRequest, code=canonical, identity=me, signature=signing.sign(key, payload))
    # Linked to this server already: the request is signed by the agent and the answer checked against the
    # pinned key before anything is kept. Any other server is a fresh start that learns nothing of the old link.
    with HelplineClient.connect(url, agent=_signer(store, previous, url)) as client:
        pinned = _trusted_key(client, store, previous, url)
        _check_before_spending(client, pinned=pinned, expected_fingerprint=expected_fingerprint)
        answer = client.pair(body)
    accept_credential(key, answer.agent, pinned=pinned, expected_fingerprint=expected_fingerprint)
    state = _state_after(url, answer.agent, previous)
    _remember_ticket(state, answer.ticket.number)
    store.save(state)
    return state, answer.ticket


def request_help(title: str, *, description: str = "", requester: str = "", server_url: str | None = None,
                 directory: Path | None = None) -> tuple[AgentState, SelfServiceResponse]:
    """Open a ticket from this PC (when the server allows it) and link the PC to it."""
    store = AgentStore(directory)
    previous = store.load()
    url = _server_for(server_url, previous)
    key = store.key()
    signer = _signer(store, previous, url)
    body = parse_input(SelfServiceRequest, title=title, description=description, requester=requester)
    if signer is None:
        me = identity.describe(key)
        # Signed as the server reads it: the title after validation (surrounding spaces removed).
        proof = signing.sign(key, signing.proof_payload("self-service", "title", body.title, me.model_dump()))
        body = body.model_copy(update={"identity": me, "signature": proof})
    with HelplineClient.connect(url, agent=signer) as client:
        answer = client.request_help(body)
        pinned = client.pinned_server_key or _pinned(previous, url)  # after a hand-over the signed answer followed
    if answer.agent is not None:
        accept_credential(key, answer.agent, pinned=pinned, expected_fingerprint=None)
        state = _state_after(url, answer.agent, previous)
    else:
        state = previous
    _remember_ticket(state, answer.ticket.number)
    store.save(state)
    return state, answer


def my_tickets(directory: Path | None = None, number: str | None = None) -> list[AgentTicket]:
    """The tickets this PC is linked to, as the server has them now (one, if ``number``: any ticket reference)."""
    wanted = parse_ticket_ref(number) if number else None
    store = AgentStore(directory)
    state = store.require()
    with HelplineClient.connect(state.server_url, agent=store.signer(state)) as client:
        if wanted is not None:
            return [client.my_ticket(wanted)]
        return client.my_tickets()


#: Asked when several open tickets could be meant: given them (newest first), return the one the user picks.
ChooseTicket = Callable[[list[AgentTicket]], AgentTicket]


def ticket_in_use(directory: Path | None = None, reference: str | None = None, *,
                  choose: ChooseTicket | None = None) -> AgentTicket | None:
    """The linked ticket a user command acts on, as the server has it now; None when no linked ticket is open.

    ``reference`` names one (it must be linked to this PC). Otherwise the one
    open ticket this PC is linked to is meant; among several, ``choose`` picks
    one (the CLI asks on a terminal), and without ``choose`` InvalidInputError
    lists them. ConfigError for a PC not linked to a server; one linked to no
    ticket asks the server nothing.
    """
    if reference is not None:
        return my_tickets(directory, reference)[0]
    if not AgentStore(directory).require().tickets:
        return None
    return pick_open(my_tickets(directory), choose)


def pick_open(tickets: list[AgentTicket], choose: ChooseTicket | None) -> AgentTicket | None:
    """The one open ticket among ``tickets``; ``choose`` picks among several (InvalidInputError without it)."""
    candidates = [t for t in tickets if is_open(t.status)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if choose is None:
        listed = ", ".join(f"{t.number} {short_title(t.title)!r}" for t in candidates)
        raise InvalidInputError(f"This PC is linked to {len(candidates)} open tickets: {listed}.",
                                hint=f"Name one with --ticket {candidates[0].number}.")
    chosen = choose(candidates)
    if chosen.number not in {t.number for t in candidates}:
        raise InvalidInputError(f"{ticket_label(parse_ticket_ref(chosen.number))} is not one of this PC's open tickets.")
    return chosen

