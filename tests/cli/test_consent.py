"""`helpline requests`: the user sees what an engineer's request would do, approves or refuses it by a
unique start of its id, and any other command says in one line that a request waits."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agent.service.consent import ConsentBox
from cli import main as cli_main
from protocol.errors import ExitStatus
from protocol.pc_requests import PcRequest, PcRequestKind


def run(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli_main.main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture
def box(tmp_path, monkeypatch) -> ConsentBox:
    monkeypatch.setenv("HELPLINE_AGENT_DIR", str(tmp_path / "agent"))
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    return ConsentBox(tmp_path / "agent" / "requests")


def waiting(box: ConsentBox, **params) -> PcRequest:
    now = datetime.now(UTC)
    request = PcRequest(id=str(uuid.uuid4()), agent_id="a" * 8, kind=PcRequestKind.RESTORE,
                        params={"paths": ["/home/ana/Documents"], **params}, ticket="T-1042", requested_by="eve",
                        requested_by_name="Eve \x1b[31mEngineer", created_at=now,
                        expires_at=now + timedelta(minutes=30), nonce=uuid.uuid4().hex)
    box.ask(request)
    return request


def test_the_user_sees_what_waits_in_words(box, capsys):
    request = waiting(box, target="overwrite")
    code, out, _ = run(capsys, ["requests"])
    assert code == ExitStatus.OK
    assert request.id[:8] in out and "for T-1042" in out
    assert "restore /home/ana/Documents from the latest snapshot, over the current files" in out
    assert "\x1b" not in out  # names from the server are shown made printable
    code, out, _ = run(capsys, ["requests", "--json"])
    assert [item["id"] for item in json.loads(out)] == [request.id]


@pytest.mark.parametrize("answer", ["approve", "refuse"])
def test_an_answer_by_a_unique_start_of_the_id_reaches_the_agent(box, capsys, answer):
    request = waiting(box)
    code, out, _ = run(capsys, ["requests", answer, request.id[:6]])
    assert code == ExitStatus.OK
    assert box.answer_for(request.id).approve is (answer == "approve")
    assert ("Approved" if answer == "approve" else "Refused") in out
    assert run(capsys, ["requests", "--json"])[1].strip() == "[]"


def test_wrong_answers_are_refused_in_one_line(box, capsys):
    waiting(box)
    code, _, err = run(capsys, ["requests", "approve"])
    assert code == ExitStatus.INVALID and "Which request" in err
    code, _, err = run(capsys, ["requests", "approve", "ffffffff"])
    assert code == ExitStatus.NOT_FOUND and "No request 'ffffffff' waits" in err
    code, _, err = run(capsys, ["requests", "maybe", "ffffffff"])
    assert code == ExitStatus.USAGE


def test_other_commands_mention_a_waiting_request_on_stderr(box, capsys):
    request = waiting(box)
    _, out, err = run(capsys, ["status"])
    assert f"helpline requests approve {request.id[:8]}" in err and "asks to restore" in err
    assert "asks to" not in out
    box.answer(request.id, approve=False, by="ana")
    _, _, err = run(capsys, ["status"])
    assert "asks to" not in err
