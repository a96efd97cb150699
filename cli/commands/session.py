"""`helpline session`: let the engineer on your ticket connect to this PC, with your yes, while you watch.

The command offers a session on the ticket, waits for the engineer's request,
asks the person at the terminal (nothing happens until they type "yes"; "no",
silence for two minutes, the end of input or Ctrl-C refuse), then mirrors the
shell live with a banner until the end key, the time limit, the engineer or the
relay ends it, and attaches the recording to the ticket.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import time
from typing import Annotated

import typer

from agent.local import this_pc
from cli import output
from cli.commands.user import PANEL, interactive, pick_ticket
from protocol.errors import ConfigError, ExitStatus, HelplineError, InvalidInputError
from protocol.grants import Scope
from protocol.times import duration
from protocol.untrusted import printable

#: Seconds the user has to answer an engineer's request before it is refused.
CONSENT_SECONDS = 120
#: Answers that are neither yes nor no before the request is refused.
ANSWER_TRIES = 5

SCOPE_ORDER = (Scope.VIEW, Scope.CONTROL, Scope.FILES, Scope.FORWARD)


def _err(text: str = "") -> None:
    """A line on stderr, exactly as given (callers make untrusted parts printable first)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _bold(text: str) -> str:
    return f"\x1b[1m{text}\x1b[0m" if sys.stderr.isatty() and not os.environ.get("NO_COLOR") else text


def consent_text(request, *, server_fingerprint: str) -> list[str]:
    """The lines of the consent prompt: every fact from the verified grant; the title labelled as free text."""
    from agent.session.mirror import SCOPE_WORDS

    one_line = lambda value: printable(value, multiline=False)  # noqa: E731
    scopes = [s for s in SCOPE_ORDER if s in request.scopes]
    lines = [
        _bold("An engineer asks to connect to this PC."),
        f"  Engineer:      {one_line(request.engineer_name)} (account {one_line(request.engineer_username)})",
        f"  Organisation:  {one_line(request.organisation)}",
        f"  Ticket:        {one_line(request.ticket)}",
        "  They could:    " + SCOPE_WORDS[scopes[0]],
        *(f"                 {SCOPE_WORDS[s]}" for s in scopes[1:]),
        f"  For at most:   {duration(request.max_duration)}",
    ]
    if request.ticket_title:
        title = printable(request.ticket_title[:200], multiline=False)
        lines.append(f"  Ticket title (written by whoever opened the ticket): \"{title}\"")
    lines += [
        f"These facts are signed by your Helpline server ({server_fingerprint}) and checked by this PC.",
        "Say yes only if you asked for help and expect this person. The session is recorded",
        "(what the shell shows, not what is typed) and attached to the ticket.",
    ]
    return lines


def read_answer(request, *, seconds: float = CONSENT_SECONDS, fd: int | None = None) -> tuple[bool, str]:
    """Ask "yes or no" on the terminal; (approved, reason). Only a typed "yes" approves.

    "no", ``seconds`` without an answer, the end of input, Ctrl-C, or the engineer
    withdrawing the request refuse; so do ``ANSWER_TRIES`` answers that are neither.
    """
    from agent.session import offer as offers

    fd = sys.stdin.fileno() if fd is None else fd
    if not os.isatty(fd):
        return False, offers.NO_TERMINAL
    until = time.monotonic() + seconds
    question = f"Allow this session? Type yes or no (refused by itself in {duration(seconds)}): "
    for _ in range(ANSWER_TRIES):
        sys.stderr.write(question)
        sys.stderr.flush()
        line = b""
        while not line.endswith(b"\n"):
            if request.withdrawn.is_set():
                _err()
                return False, offers.WITHDRAWN
            left = until - time.monotonic()
            if left <= 0:
                _err()
                return False, offers.TIMED_OUT
            try:
                ready = select.select([fd], [], [], min(left, 0.5))[0]
            except KeyboardInterrupt:
                return False, offers.CTRL_C
            if not ready:
                continue
            try:
                chunk = os.read(fd, 1024)
            except KeyboardInterrupt:
                return False, offers.CTRL_C
            if not chunk:
                _err()
                return False, offers.NO_ANSWER
            line += chunk
            if len(line) > 4096:
                break
        answer = line.decode("utf-8", "replace").strip().lower()
        if answer == "yes":
            return True, ""
        if answer in ("no", "n"):
            return False, offers.REFUSED
        _err('Type the word "yes" to allow it, or "no" to refuse.')
    return False, offers.REFUSED


def _summary_line(summary) -> str:
    moved = f"{output.size(summary.bytes_to_pc)} in, {output.size(summary.bytes_from_pc)} out"
    tail = ("the recording is attached to the ticket" if summary.recording_attached
            else f"the recording is kept at {summary.recording_kept}" if summary.recording_kept else "nothing was recorded")
    return (f"Session on {summary.ticket} with {printable(summary.engineer, multiline=False)} ended "
            f"({printable(summary.reason, multiline=False)}) after {duration(summary.seconds)}; {moved}; {tail}.")


def run_session(reference: str | None = None, *, answer_within: float = CONSENT_SECONDS) -> None:
    """The whole flow of `helpline session` (also the end of `helpline share --session`)."""
    from agent.session import offer as offers
    from agent.session.mirror import KEYS_HELP, Mirror

    offers.check_platform()
    if not interactive():
        raise InvalidInputError("A remote session needs you at a terminal: only you can approve the engineer's request.",
                                hint="Run `helpline session` in a terminal window; nothing approves a session for you.")
    for name in ("paramiko", "websockets", "agent"):  # their log lines must not land on the mirrored screen
        logging.getLogger(name).addHandler(logging.NullHandler())
    pc = this_pc()
    ticket = pc.ticket_in_use(reference, choose=pick_ticket)
    if ticket is None:
        raise ConfigError("This PC has no open ticket to offer a session on.",
                          hint='Open one with `helpline request "what is wrong"`, or name one with --ticket T-1042.')
    server_fingerprint = pc.link().server_fingerprint
    offer = pc.session_offer(ticket.number)
    live = None
    try:
        try:
            offer.offer()
            _err(f"Waiting for an engineer on ticket {ticket.number}  (Ctrl-C to stop)")
            request = offer.next_request()
        except KeyboardInterrupt:
            offer.withdraw("the user stopped waiting")
            raise HelplineError("Stopped waiting. No session was opened.", status=ExitStatus.INTERRUPTED) from None
        except HelplineError as exc:
            offer.withdraw(f"the PC refused: {exc.message}")
            if exc.status in (ExitStatus.AUTH, ExitStatus.FORBIDDEN, ExitStatus.INVALID):
                raise type(exc)(f"A session request was refused without asking you: {exc.message}",
                                hint="Nothing was opened. Tell your support team; the request did not come "
                                     "verified from your Helpline server.") from exc
            raise
        _err()
        for line in consent_text(request, server_fingerprint=server_fingerprint):
            _err(line)
        approved, reason = read_answer(request, seconds=answer_within)
        mirror_box: list[Mirror] = []

        def shown(data: bytes) -> None:
            if mirror_box:
                mirror_box[0].output(data)

        def joined(verification: str, username: str) -> None:
            if mirror_box:
                mirror_box[0].connected(verification, username)

        def gone(reason_text: str) -> None:
            if mirror_box:
                mirror_box[0].ended(reason_text)

        def event(item) -> None:
            if item.kind == "chat" and item.text and mirror_box:
                mirror_box[0].message(item.engineer_name or request.engineer_name, item.text)

        cols, rows = os.get_terminal_size(sys.stdout.fileno()) if sys.stdout.isatty() else (80, 24)
        live = offer.answer(request, offers.Decision(approved, reason), recording_size=(cols, rows - 1),
                            on_output=shown, on_authenticated=joined, on_end=gone, on_event=event)
        if live is None:
            if reason == offers.CTRL_C:
                raise HelplineError("Refused (Ctrl-C). Nothing was opened.", status=ExitStatus.INTERRUPTED)
            said = {offers.TIMED_OUT: "No answer in time: the request was refused.",
                    offers.NO_ANSWER: "The input ended: the request was refused.",
                    offers.NO_TERMINAL: "There is no terminal to ask you: the request was refused.",
                    offers.WITHDRAWN: "The engineer withdrew the request."}
            _err(said.get(reason, "You refused the request.") + " Nothing was opened; your engineer is told.")
            return
        mirror = Mirror(live, engineer=request.engineer_name, account=request.engineer_username, stdin_fd=sys.stdin.fileno(), stdout_fd=sys.stdout.fileno())
        mirror_box.append(mirror)
        _err(f"Approved. Waiting for {printable(request.engineer_name, multiline=False)} to connect. "
             f"Keys: {KEYS_HELP}.")
        _err("This session is recorded (what the shell shows, not what is typed) and attached to the ticket.")
        mirror.run()
        summary = live.finish()
        _err(_summary_line(summary))
        for problem in summary.problems:
            output.error(problem.capitalize())
    finally:
        if live is not None:
            live.finish()
        offer.shutdown()


def session(
    ticket: Annotated[str | None, typer.Option("--ticket", "-t", metavar="TICKET", help="The ticket the session is for, like T-1042 (default: this PC's open ticket).")] = None,
    answer_within: Annotated[int, typer.Option("--answer-within", metavar="SECONDS", min=2, max=600, help="Seconds you have to answer the engineer's request before it is refused.")] = CONSENT_SECONDS,
) -> None:
    """Let your engineer connect to this PC: you approve their request, watch everything live, and can end it at any moment.

    It waits for the engineer on the ticket this PC is linked to (it asks which when
    several are open) and shows who asks, for what and for how long, as your Helpline
    server signed it. Nothing happens until you type "yes"; "no", two minutes without
    an answer, or Ctrl-C refuse. During the session your terminal shows the shell the
    engineer works in, and you can type too. Keys: Ctrl-] ends the session at once
    (so does closing the terminal); Ctrl-T sends a message to the engineer; Ctrl-O
    takes a permission back. The session ends by itself at the time you approved, with
    every program it started, and its recording (output only) is attached to the ticket.

    Not available on Windows yet (exit status 10), nor without a terminal (exit status 10).

    Examples:
      helpline session
      helpline session --ticket T-1042
    """
    run_session(ticket, answer_within=answer_within)


def register(app: typer.Typer) -> None:
    app.command(name="session", rich_help_panel=PANEL)(session)
