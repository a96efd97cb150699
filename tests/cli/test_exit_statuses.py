"""Every failure leaves `helpline` as one line and a hint, with its documented exit status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cli import main as cli_main
from cli import output
from agent.local import ThisPC
from protocol import errors as st


def run(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli_main.main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.mark.parametrize("error, code", [
    (st.ConfigError("not set up"), 3),
    (st.AuthError("bad token"), 4),
    (st.ForbiddenError("no"), 5),
    (st.NotFoundError("gone"), 6),
    (st.ConflictError("clash"), 7),
    (st.RateLimitedError("slow down"), 8),
    (st.UnavailableError("down"), 9),
    (st.InvalidInputError("bad"), 10),
    (st.TooLargeError("big"), 10),
    (st.HelplineError("odd"), 1),
    (RuntimeError("boom"), 1),
    (KeyboardInterrupt(), 130),
])
def test_each_error_has_its_exit_status(monkeypatch, capsys, error, code):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(ThisPC, "tickets", fail)
    status, out, err = run(capsys, ["status", "--all"])
    assert status == code
    assert out == ""
    assert err.startswith("error: ")
    assert "Traceback" not in err


def test_hint_is_printed_on_its_own_line(monkeypatch, capsys):
    monkeypatch.setattr(ThisPC, "tickets", lambda *a, **kw: (_ for _ in ()).throw(st.ConfigError("Not linked.", hint="Run helpline pair.")))
    status, _, err = run(capsys, ["status", "--all"])
    assert status == 3
    assert err.splitlines() == ["error: Not linked.", "hint: Run helpline pair."]


def test_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(ThisPC, "tickets", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("boom")))
    status, _, err = run(capsys, ["--debug", "status", "--all"])
    assert status == 1 and "Traceback" in err and "RuntimeError: boom" in err


@pytest.mark.parametrize("argv", [["no-such-command"], ["ticket", "create"], ["pair"], ["ticket", "list", "--limit", "0"]])
def test_usage_errors_exit_2(capsys, argv):
    status, _, err = run(capsys, argv)
    assert status == 2 and err.startswith("error: ")


def test_version_and_help(capsys):
    status, out, _ = run(capsys, ["--version"])
    assert status == 0 and out.startswith("helpline ")
    status, out, _ = run(capsys, ["--help"])
    assert status == 0
    for panel in ("For users", "For engineers", "For admins"):
        assert panel in out
    status, out, _ = run(capsys, ["ticket", "pair-code", "--help"])
    assert status == 0 and "Example" in out


def test_no_colour_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(ThisPC, "tickets", lambda *a, **kw: (_ for _ in ()).throw(st.AuthError("x")))
    _, _, err = run(capsys, ["status", "--all"])
    assert "\x1b[" not in err


@pytest.mark.parametrize("minutes, text", [(30, "30 min"), (60, "1 h"), (240, "4 h"), (90, "1 h 30 min"), (1440, "24 h"), (4320, "3 days")])
def test_durations_read_like_a_person_says_them(minutes, text):
    assert output.duration(minutes) == text


def test_promise_line():
    due = datetime.now(UTC) + timedelta(hours=4)
    line = output.promise(due, 240)
    local = due.astimezone()
    day = "today" if local.date() == datetime.now(UTC).astimezone().date() else "tomorrow"
    assert line == f"An engineer will answer by {day} {local:%H:%M} {local.tzname()} (within 4 h)."


def test_brackets_in_messages_are_printed_as_they_are(monkeypatch, capsys):
    error = st.ConfigError("The server is not installed here.", hint="Install it with: pip install 'helpline[server]'.")
    monkeypatch.setattr(ThisPC, "tickets", lambda *a, **kw: (_ for _ in ()).throw(error))
    _, _, err = run(capsys, ["status", "--all"])
    assert "pip install 'helpline[server]'" in err


def test_user_text_with_brackets_is_shown_verbatim(monkeypatch, capsys):
    from protocol.schemas import AgentTicket, TimelineEntry

    now = datetime.now(UTC)
    ticket = AgentTicket(
        number="T-1042", title="[URGENT] VPN [red]down[/]", status="open", priority="high", assignee="Dana [IT]",
        created_at=now, first_response_due=now + timedelta(hours=2), first_responded_at=None,
        timeline=[TimelineEntry(at=now, actor="Dana [IT]", kind="note", message="Try [bold]this[/] fix")],
    )
    monkeypatch.setattr(ThisPC, "tickets", lambda *a, **kw: [ticket])
    status, out, _ = run(capsys, ["status", "--all"])
    assert status == 0
    assert "[URGENT] VPN [red]down[/]" in out and "Dana [IT]" in out and "Try [bold]this[/] fix" in out


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (37_600, "37.6 KB"), (1_440_000, "1.4 MB"), (2.5e9, "2.5 GB"), (3e12, "3000.0 GB")])
def test_sizes_read_in_decimal_units(n, text):
    assert output.size(n) == text
