"""Commands for the person at the PC: pair with a ticket, ask for help, see the status."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.local import this_pc
from cli import output
from protocol.schemas import AgentTicket

PANEL = "For users"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]
ServerOpt = Annotated[str | None, typer.Option("--server", metavar="URL", help="The Helpline server's address (needed the first time).")]


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
    if ticket.first_responded_at is None and ticket.status in ("new", "open"):
        output.say(output.promise(ticket.first_response_due, _window(ticket)))
    else:
        who = f" ({output.esc(ticket.assignee)})" if ticket.assignee else ""
        output.say(f"Status: {ticket.status}{who}.")


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


def status(
    ticket: Annotated[str | None, typer.Argument(metavar="TICKET", help="One ticket, like T-1042 (default: every ticket of this PC).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show your tickets: status, who is on it, and what happened so far.

    Example: helpline status T-1042
    """
    tickets = this_pc().tickets(ticket)
    if json_out:
        output.print_json(tickets)
        return
    if not tickets:
        output.say("This PC has no tickets yet. Open one with `helpline request \"what is wrong\"`.")
        return
    for t in tickets:
        who = output.esc(t.assignee or "not yet assigned")
        output.say(f"[bold]{t.number}[/] {output.esc(t.title)}\n  Status: {t.status} · Engineer: {who} · Priority: {t.priority}")
        if t.first_responded_at is None and t.status not in ("resolved", "closed"):
            output.say("  " + output.promise(t.first_response_due, _window(t)))
        output.table(None, ["When", "Who", "What"], [(output.local_time(e.at), e.actor, e.message) for e in t.timeline])
