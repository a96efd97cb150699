"""`helpline session` and `share --session` refuse at once, with exit status 10, where no person can approve
a session (no terminal) or no session can run (Windows); nothing is offered or gathered first."""

from __future__ import annotations

import pytest

from agent.local import ThisPC
from agent.session import offer as offers
from cli import main as cli_main
from cli.commands import session as session_command
from cli.commands import share as share_command


def run(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli_main.main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture
def untouched(monkeypatch):
    """Fail the test if the command reached this PC's agent (a ticket, an offer, a share)."""
    def reached(*args, **kwargs):
        raise AssertionError("the command went on instead of refusing")

    for name in ("ticket_in_use", "session_offer", "choose_ticket", "link"):
        monkeypatch.setattr(ThisPC, name, reached)


def test_without_a_terminal_a_session_is_refused_before_anything_is_offered(capsys, monkeypatch, untouched):
    monkeypatch.setattr(session_command, "interactive", lambda: False)
    status, out, err = run(capsys, ["session"])
    assert status == 10 and out == ""
    assert err.splitlines()[0] == "error: A remote session needs you at a terminal: only you can approve the engineer's request."


def test_on_windows_a_session_says_it_is_not_available(capsys, monkeypatch, untouched):
    monkeypatch.setattr(session_command, "interactive", lambda: True)
    monkeypatch.setattr(offers.os, "name", "nt")
    status, _, err = run(capsys, ["session"])
    assert status == 10
    assert err.splitlines()[0] == "error: Remote sessions are not available on Windows yet."


@pytest.mark.parametrize("extra", [["--output", "x.tar.gz"], ["--preview"], ["--json"]], ids=["output", "preview", "json"])
def test_share_session_needs_a_share_that_is_sent(capsys, monkeypatch, untouched, extra):
    monkeypatch.setattr(share_command, "_interactive", lambda: True)
    status, _, err = run(capsys, ["share", "--session", *extra])
    assert status == 10 and "--session follows a share that is sent" in err


def test_share_session_without_a_terminal_refuses_before_gathering(capsys, monkeypatch, untouched):
    monkeypatch.setattr(share_command, "_interactive", lambda: False)
    status, _, err = run(capsys, ["share", "--session", "--yes"])
    assert status == 10 and "needs you at a terminal" in err
