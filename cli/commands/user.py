"""Commands for the person at the PC: pair with a ticket, ask for help, see the status."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.local import this_pc
from cli import output
from protocol.errors import InvalidInputError
from protocol.tickets import canonical_ticket, is_open, parse_ticket_ref, short_title

if TYPE_CHECKING:  # the ticket model is only named here; the commands that get one load it
    from protocol.schemas import AgentTicket

PANEL = "For users"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]
ServerOpt = Annotated[str | None, typer.Option("--server", metavar="URL", help="The Helpline server's address (needed the first time).")]


def interactive() -> bool:
    """Whether a person is at a terminal to answer questions."""
    return sys.stdin.isatty() and sys.stderr.isatty()


PICK_TRIES = 5


def pick_ticket(tickets: list[AgentTicket]) -> AgentTicket:
    """Ask on the terminal which of several open tickets a command is about (a bounded number of tries)."""
    _tell("This PC is linked to several open tickets:")
    for index, t in enumerate(tickets, 1):
        _tell(f"  {index}) {t.number} {quoted_title(t.title)} ({t.status})")
    for _ in range(PICK_TRIES):
        answer = typer.prompt(f"Which ticket is this about? [1-{len(tickets)}]", default="", show_default=False, err=True).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(tickets):
            return tickets[int(answer) - 1]
        try:
            named = canonical_ticket(answer)
        except InvalidInputError:
            named = None
        for t in tickets:
            if t.number == named:
                return t
        _tell(f"Type a number from 1 to {len(tickets)}, or a ticket number such as {tickets[0].number}.")
    raise InvalidInputError("No ticket was chosen.", hint=f"Name one with --ticket {tickets[0].number}.")


def _tell(line: str) -> None:
    """A line of a question on stderr (stdout stays for results), made printable, never read as markup."""
    output.err_console().print(output.esc(line))


def quoted_title(title: str) -> str:
    """A ticket title shortened to one line and quoted, as questions name a ticket (made printable where shown)."""
    return f"'{short_title(title)}'"


def _window(ticket: AgentTicket) -> float:
    return (ticket.first_response_due - ticket.created_at).total_seconds() / 60


def pair(
    code: Annotated[str, typer.Argument(metavar="CODE", help="The pairing code your engineer read to you, like 7KQ2-M9XD.")],
    server: ServerOpt = None,
    server_key: Annotated[str | None, typer.Option("--server-key", metavar="FINGERPRINT", help="Refuse a server whose key has another fingerprint.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Link this PC to your ticket with the code your engineer gives you.

    Example: helpline pair 7KQ2-M9XD --server https://help.example.com
    """
    state, ticket = this_pc().pair(code, server_url=server, expected_fingerprint=server_key)
    if json_out:
        output.print_json({"ticket": ticket, "agent_id": state.agent_id, "server": state.server_url})
        return
    output.say(f"This PC is now linked to ticket [bold]{ticket.number}[/] — {output.esc(ticket.title)}.")
    line = response_line(ticket)
    who = f" ({output.esc(ticket.assignee)})" if ticket.assignee else ""
    output.say(line if line and ticket.first_responded_at is None else f"Status: {ticket.status}{who}.")
    if is_open(ticket.status):
        output.say("Send your diagnostics to it with `helpline share`; see it with `helpline status`.")


def request(
    title: Annotated[str, typer.Argument(metavar="TITLE", help="What is wrong, in a few words.")],
    description: Annotated[str, typer.Option("--description", "-d", metavar="TEXT", help="More detail: what happened, since when, what you tried.")] = "",
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Your name, so the engineer knows whom to call.")] = "",
    server: ServerOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Open a new ticket from this PC and learn at once when an engineer will answer.

    Example: helpline request "Outlook crashes on start" -d "since this morning, reboot did not help"
    """
    state, answer = this_pc().request_help(title, description=description, requester=name, server_url=server)
    if json_out:
        output.print_json({"ticket": answer.ticket, "response_minutes": answer.response_minutes, "server": state.server_url})
        return
    output.say(f"Ticket [bold]{answer.ticket.number}[/] is open. {output.promise(answer.ticket.first_response_due, answer.response_minutes)}")


def response_line(ticket: AgentTicket, *, now: datetime | None = None) -> str | None:
    """What the user is told about the first response: when it came, when it is due, or that it is late."""
    if ticket.first_responded_at is not None:
        return f"An engineer answered at {output.local_time(ticket.first_responded_at)}."
    if not is_open(ticket.status):
        return None
    now = now or datetime.now(UTC)
    if ticket.first_response_due > now:
        return output.promise(ticket.first_response_due, _window(ticket))
    return (f"An engineer was due to answer by {output.local_time(ticket.first_response_due)}; it is late — "
            "your ticket is still in the queue, and nothing is lost.")


def _show(t: AgentTicket) -> None:
    who = output.esc(t.assignee or "not yet assigned")
    output.say(f"[bold]{t.number}[/] {output.esc(t.title)}\n  Status: {t.status} · Engineer: {who} · Priority: {t.priority}")
    line = response_line(t)
    if line:
        output.say("  " + line)
    output.table(None, ["When", "Who", "What"], [(output.local_time(e.at), e.actor, e.message) for e in t.timeline])


def status(
    ticket: Annotated[str | None, typer.Argument(metavar="TICKET", help="One ticket, like T-1042 (default: the open ticket of this PC).")] = None,
    ticket_opt: Annotated[str | None, typer.Option("--ticket", "-t", metavar="TICKET", help="The same as the TICKET argument.")] = None,
    show_all: Annotated[bool, typer.Option("--all", "-a", help="Every ticket of this PC, closed ones too.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show your ticket: status, who is on it, when an engineer answers, and what happened so far.

    Without a ticket it shows the one this PC is linked to that is open (it asks
    which when several are open).

    Example: helpline status          helpline status T-1042          helpline status --all
    """
    if ticket and ticket_opt and parse_ticket_ref(ticket) != parse_ticket_ref(ticket_opt):
        raise InvalidInputError("Give the ticket once (as TICKET or --ticket).")
    reference = ticket or ticket_opt
    pc = this_pc()
    if show_all:
        tickets = pc.tickets()
    else:
        current = pc.ticket_in_use(reference, choose=pick_ticket if interactive() else None)
        tickets = [current] if current is not None else pc.tickets()
    if json_out:
        output.print_json(tickets)
        return
    if not tickets:
        output.say("This PC has no tickets yet. Open one with `helpline request \"what is wrong\"`.")
        return
    if not show_all and reference is None and not any(is_open(t.status) for t in tickets):
        output.say("None of this PC's tickets is open; the earlier ones:")
    for t in tickets:
        _show(t)


def reply(
    message: Annotated[str, typer.Argument(metavar="MESSAGE", help="What you want to tell your engineer.")],
    file: Annotated[Path | None, typer.Option("--file", "-f", metavar="PATH", help="Attach one small file (a screenshot, a log; up to 512 KiB).")] = None,
    ticket: Annotated[str | None, typer.Option("--ticket", "-t", metavar="TICKET", help="The ticket to reply to (default: this PC's open ticket).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer your engineer: add a message, and perhaps a file, to your ticket.

    It goes to the ticket this PC is linked to when one is open (it asks which when several are).

    Examples:
      helpline reply "It crashed again at 10:15, right after I opened the calendar."
      helpline reply "Here is the error window" --file ~/Pictures/error.png --ticket T-1042
    """
    after = this_pc().reply(message, file=file, ticket=ticket, choose=pick_ticket if interactive() else None)
    if json_out:
        output.print_json(after)
        return
    attached = f" with {output.esc(file.name)}" if file else ""
    output.say(f"Your reply{attached} is on ticket [bold]{after.number}[/] — {output.esc(after.title)}. "
               "Your engineer sees it in the ticket's timeline.")
