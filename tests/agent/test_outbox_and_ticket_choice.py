"""The agent's side of sharing without a server at hand: what the outbox says about each
queued bundle, and which ticket a share goes to when the PC is already linked."""

from __future__ import annotations

import pytest

from agent import upload
from agent.share import TicketChoice, choose_ticket, linked_ticket
from agent.store import AgentState, AgentStore
from protocol.errors import ConfigError, InvalidInputError, QuotaExceededError, StorageFullError, UnavailableError
from tests.support.bundles import write_archive
from tests.support.net import free_port

QUICK = upload.RetryPolicy(attempts=2, first_delay=0.01, max_delay=0.02, deadline=5)


def linked_pc(directory, server_url: str, tickets: list[str]) -> AgentState:
    state = AgentState(server_url=server_url, agent_id="agent-1", credential="hla_x", server_public_key="key", tickets=tickets)
    AgentStore(directory).save(state)
    return state


def queued(directory, tmp_path, ticket: str, server_url: str) -> upload.OutboxEntry:
    return upload.enqueue(write_archive(tmp_path / f"{ticket}.tar.gz"), ticket, server_url, directory=directory)


def test_bundles_for_another_server_wait_untouched(tmp_path):
    agent_dir = tmp_path / "agent"
    mine, other = f"http://127.0.0.1:{free_port()}", "https://old.example.com"
    linked_pc(agent_dir, mine, ["T-1"])
    entry = queued(agent_dir, tmp_path, "T-9", other)
    [done] = upload.send_queued(directory=agent_dir, policy=QUICK)
    assert done.result is upload.Delivery.UNLINKED and done.entry.id == entry.id and done.bundle is None
    assert [e.id for e in upload.pending(agent_dir)] == [entry.id]


def test_without_any_link_everything_waits(tmp_path):
    agent_dir = tmp_path / "agent"
    queued(agent_dir, tmp_path, "T-1", "https://help.example.com")
    assert [d.result for d in upload.send_queued(directory=agent_dir, policy=QUICK)] == [upload.Delivery.UNLINKED]


def test_an_unreachable_server_leaves_bundles_queued_in_order(tmp_path):
    agent_dir = tmp_path / "agent"
    server = f"http://127.0.0.1:{free_port()}"
    linked_pc(agent_dir, server, ["T-1", "T-2"])
    first = queued(agent_dir, tmp_path, "T-1", server)
    second = queued(agent_dir, tmp_path, "T-2", server)
    results = upload.send_queued(directory=agent_dir, policy=QUICK)
    assert [(d.entry.id, d.result) for d in results] == [(first.id, upload.Delivery.WAITING), (second.id, upload.Delivery.WAITING)]
    assert len(upload.pending(agent_dir)) == 2


def test_an_empty_outbox_sends_nothing(tmp_path):
    assert upload.send_queued(directory=tmp_path / "agent") == []


@pytest.mark.parametrize("spelling", ["T-1042", "t-1042", "#1042", "1042", " 1042 "])
def test_a_linked_ticket_needs_no_server(tmp_path, spelling):
    linked_pc(tmp_path, f"http://127.0.0.1:{free_port()}", ["T-7", "T-1042"])  # nothing listens there
    assert choose_ticket(ticket=spelling, directory=tmp_path) == TicketChoice("T-1042")


def test_a_ticket_this_pc_is_not_linked_to_is_refused(tmp_path):
    linked_pc(tmp_path, "https://help.example.com", ["T-7"])
    with pytest.raises(ConfigError, match="not linked to T-1042"):
        linked_ticket("#1042", directory=tmp_path)
    with pytest.raises(InvalidInputError, match="is not a ticket number"):
        linked_ticket("t1042", directory=tmp_path)


class FullServer:
    """A server that answers, but refuses every new upload with ``error``; counts the attempts."""

    def __init__(self, error):
        self.error, self.starts = error, 0

    def start_upload(self, ticket, body):  # the first request of a delivery: no round trip before it
        self.starts += 1
        raise self.error


@pytest.mark.parametrize("error", [StorageFullError("The server's disk is full."),
                                   QuotaExceededError("This PC is over its quota.")])
def test_a_full_server_or_quota_is_not_retried_and_the_bundle_stays_queued(tmp_path, error):
    agent_dir = tmp_path / "agent"
    entry = queued(agent_dir, tmp_path, "T-1", "https://help.example.com")
    server = FullServer(error)
    with pytest.raises(type(error)) as raised:
        upload.deliver(entry, "hla_x", directory=agent_dir, policy=upload.RetryPolicy(attempts=5, first_delay=0.01), client=server)
    assert raised.value is error and server.starts == 1
    assert [e.id for e in upload.pending(agent_dir)] == [entry.id]


def test_an_unreachable_server_is_given_up_on_after_the_first_contact_s_attempts(tmp_path):
    agent_dir = tmp_path / "agent"
    entry = queued(agent_dir, tmp_path, "T-1", "https://help.example.com")
    server = FullServer(UnavailableError("Could not reach the server."))
    policy = upload.RetryPolicy(attempts=8, connect_attempts=3, first_delay=0.001, max_delay=0.002)
    with pytest.raises(UnavailableError, match="Could not start the upload"):
        upload.deliver(entry, "hla_x", directory=agent_dir, policy=policy, client=server)
    assert server.starts == 3
    assert [e.id for e in upload.pending(agent_dir)] == [entry.id]
