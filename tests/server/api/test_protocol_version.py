"""Protocol version negotiation: every answer states the server's version, a missing header is today's agents
(version 1, accepted), a too-old agent is refused with 426 and one clear line, and each agent's version is kept."""

from __future__ import annotations

import pytest

from agent.http import error_from_response
from protocol import version
from protocol.errors import ExitStatus, UpgradeRequiredError
from server.models import Agent


def test_every_answer_states_the_servers_version(helpline):
    answer = helpline.call("GET", "server")
    assert answer.headers[version.PROTOCOL_HEADER] == str(version.PROTOCOL_VERSION)
    assert helpline.call("GET", "no-such-route").headers[version.PROTOCOL_HEADER] == str(version.PROTOCOL_VERSION)


def test_a_missing_header_is_version_one_and_accepted_and_the_stated_version_is_recorded(helpline):
    pc = helpline.enrolled_pc("pc-ana")
    assert helpline.call("GET", "agent/requests", pc).status_code == 200  # no header: today's agents
    with helpline.db() as session:
        assert session.get(Agent, pc.agent_id).protocol_version == 1
    request = helpline.signed(pc, "GET", "agent/requests", headers={version.PROTOCOL_HEADER: "2"})
    assert helpline.http.send(request).status_code == 200
    with helpline.db() as session:
        assert session.get(Agent, pc.agent_id).protocol_version == 2


@pytest.mark.parametrize("value", ["two", "-1", "0", "9999999", "2.0"], ids=["word", "negative", "zero", "huge", "dot"])
def test_a_header_that_is_no_version_is_refused(helpline, value):
    answer = helpline.call("GET", "server", headers={version.PROTOCOL_HEADER: value})
    assert answer.status_code == 400 and "not a protocol version" in answer.json()["error"]["message"]


def test_a_too_old_agent_is_told_to_upgrade_with_a_signed_426_and_its_own_exit_status(helpline, monkeypatch):
    pc = helpline.enrolled_pc("pc-ana")
    monkeypatch.setattr(version, "MIN_AGENT_PROTOCOL", 2)
    request = helpline.signed(pc, "GET", "agent/requests")  # no header: version 1
    answer = helpline.http.send(request)
    assert answer.status_code == 426
    assert "this agent is too old for the server: upgrade it" in answer.json()["error"]["message"].lower()
    assert helpline.answer_is_signed(request, answer)  # the agent can tell the server's refusal from an interception
    error = error_from_response(answer)
    assert isinstance(error, UpgradeRequiredError) and error.status == ExitStatus.CONFIG
    request = helpline.signed(pc, "GET", "agent/requests", headers={version.PROTOCOL_HEADER: "2"})
    assert helpline.http.send(request).status_code == 200
