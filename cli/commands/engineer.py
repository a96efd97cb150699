"""Commands for engineers: log in, work tickets, issue pairing codes, manage SSH keys."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from agent.client import HelplineClient
from agent.http import normalize_url
from cli import answers, credentials, output
from protocol.errors import ConfigError, ConflictError, DamagedError, InvalidInputError, NotFoundError
from protocol.schemas import (
    AttachmentPublic,
    LoginRequest,
    NoteCreate,
    PasswordChange,
    Priority,
    SshKeyCreate,
    TicketCreate,
    TicketDetail,
    TicketPublic,
    TicketSort,
    TicketStatus,
    TicketUpdate,
    parse_input,
)
from protocol.identifiers import short_ids
from protocol.tickets import is_open, parse_ticket_ref, short_title, ticket_label
from protocol.untrusted import contained, printable, safe_component

PANEL = "For engineers"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]

ticket_app = typer.Typer(help="Open, list, show and update tickets.", no_args_is_help=True)
ssh_key_app = typer.Typer(help="Your SSH public keys, used to open remote sessions.", no_args_is_help=True)


def read_secret(prompt: str, from_stdin: bool) -> str:
    """Read a password from standard input (for scripts) or from the terminal without echo."""
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise InvalidInputError("No terminal to ask for the password.", hint="Pipe it in with --password-stdin.")
        value = answers.ask_hidden(prompt)
    if not value:
        raise InvalidInputError("The password is empty.")
    return value


def login(
    url: Annotated[str | None, typer.Argument(metavar="URL", help="The Helpline server, like https://help.example.com (default: the one you last logged in to).")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", metavar="USER", help="Your account name (asked if missing).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")] = False,
) -> None:
    """Log in to a Helpline server; the token is kept in your config directory (mode 0600).

    Examples:
      echo "$PW" | helpline login https://help.example.com -u alice --password-stdin
      helpline login     (again, on the server you last logged in to)
    """
    if url is None:
        url = credentials.saved_server()
        if url is None:
            raise ConfigError("Which server? This computer has not logged in to one yet.",
                              hint="Run `helpline login URL` with your Helpline server's address.")
    base = normalize_url(url)
    if username is None:
        previous = credentials.saved_username() if normalize_url(url) == credentials.saved_server() else None
        if previous and password_stdin:  # standard input carries the password: keep the account of the last login
            username = previous
        else:
            username = typer.prompt("Username", default=previous) if previous else typer.prompt("Username")
    password = read_secret("Password: ", password_stdin)
    body = parse_input(LoginRequest, username=username, password=password, token_name="cli")
    with HelplineClient.connect(base) as client:
        answer = client.login(body)
    credentials.save_login(credentials.Login(base, answer.token, answer.account.username, answer.account.role.value, answer.expires_at.isoformat()))
    output.say(f"Logged in to {output.esc(base)} as [bold]{answer.account.username}[/] ({answer.account.role.value}); the token is valid until {output.local_time(answer.expires_at)}.")


def logout() -> None:
    """Revoke your token on the server and forget it here.

    Example: helpline logout
    """
    try:
        with credentials.connect() as client:
            client.logout()
    finally:
        credentials.forget_login()
    output.say("Logged out.")


def whoami(json_out: JsonOpt = False) -> None:
    """Show the account you are logged in as.

    Example: helpline whoami --json
    """
    with credentials.connect() as client:
        me = client.me()
    if json_out:
        output.print_json(me)
        return
    output.say(f"{me.username} ({output.esc(me.display_name)}), {me.role.value}, on {output.esc(credentials.load_login().server_url)}")


def response_cell(t: TicketPublic, now: datetime) -> str:
    """What a list says about a ticket's first response: answered when, due when, late since when, or nothing."""
    if t.first_responded_at is not None:
        return f"answered {output.local_time(t.first_responded_at)}"
    if not is_open(t.status):
        return "—"
    if t.first_response_due <= now:
        return f"OVERDUE since {output.local_time(t.first_response_due)}"
    return f"due {output.local_time(t.first_response_due)}"


def _ticket_rows(tickets: list[TicketPublic]):
    now = datetime.now(UTC)
    for t in tickets:
        yield (t.number, t.status.value, t.priority.value, t.assignee or "—", response_cell(t, now), t.title)


def _when(text: str) -> datetime:
    """A moment typed on the command line (ISO 8601; without a zone it is this PC's local time)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(f"{text!r} is not a date and time.", hint="Write it like 2026-12-02T15:00 or 2026-12-02.") from None
    return moment if moment.tzinfo else moment.astimezone()


def _show_ticket(t: TicketDetail) -> None:
    output.say(f"[bold]{t.number}[/] {output.esc(t.title)}")
    output.say(f"Status: {t.status.value} · Priority: {t.priority.value} · Assignee: {t.assignee or '—'} · Channel: {t.channel.value}")
    responded = output.local_time(t.first_responded_at) if t.first_responded_at else "not yet"
    output.say(f"Requester: {output.esc(t.requester or '—')} · First response due {output.local_time(t.first_response_due)} (answered: {responded})")
    if t.description:
        output.say(output.esc(t.description))
    if t.agents:
        output.say(output.esc("PCs: " + ", ".join(t.agents)))
    output.table("Timeline", ["When", "Who", "What"], [(output.local_time(e.at), e.actor, e.message) for e in t.timeline])
    if t.bundles:
        short = short_ids(b.id for b in t.bundles)
        output.table("Diagnostics (helpline diag get ID)", ["Id", "From", "When", "Files", "Size"],
                     [(short[b.id], b.hostname, output.local_time(b.created_at), b.files, output.size(b.size)) for b in t.bundles])
    if t.attachments:
        output.table(f"Files from the user (helpline ticket attachment {t.number} ID)", ["Id", "From", "When", "Name", "Size"],
                     [(a.id, a.hostname, output.local_time(a.created_at), a.filename, output.size(a.size)) for a in t.attachments])


@ticket_app.command("create")
def ticket_create(
    title: Annotated[str, typer.Argument(metavar="TITLE", help="What the ticket is about.")],
    description: Annotated[str, typer.Option("--description", "-d", metavar="TEXT", help="More detail: what happened, since when, what was tried.")] = "",
    requester: Annotated[str, typer.Option("--requester", "-r", metavar="NAME", help="Who asked for help.")] = "",
    priority: Annotated[Priority, typer.Option("--priority", "-p", help="How urgent it is; sets the first-response deadline.")] = Priority.NORMAL,
    assign: Annotated[str | None, typer.Option("--assign", metavar="USER", help="Username of the engineer to assign.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Open a ticket.

    Example: helpline ticket create "Laptop will not boot" -r "Dana, accounts" -p high --assign alice
    """
    body = parse_input(TicketCreate, title=title, description=description, requester=requester, priority=priority, assignee=assign)
    with credentials.connect() as client:
        t = client.create_ticket(body)
    if json_out:
        output.print_json(t)
        return
    window = (t.first_response_due - t.created_at).total_seconds() / 60
    output.say(f"Ticket [bold]{t.number}[/] is open. First response due by {output.local_time(t.first_response_due)} (within {output.duration(window)}).")


@ticket_app.command("list")
def ticket_list(
    status: Annotated[list[TicketStatus] | None, typer.Option("--status", "-s", help="Only these statuses (repeatable).")] = None,
    assignee: Annotated[str | None, typer.Option("--assignee", "-a", metavar="USER", help="Only tickets of this engineer ('none' for unassigned).")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only tickets assigned to me.")] = False,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only tickets whose promised first response has passed unanswered (most late first).")] = False,
    due_before: Annotated[str | None, typer.Option("--due-before", metavar="WHEN", help="Only unanswered tickets due before this time, like 2026-12-02T15:00 (local time).")] = None,
    sort: Annotated[TicketSort | None, typer.Option("--sort", help="newest first, or due: the soonest first response first (the default with --overdue or --due-before).")] = None,
    show_all: Annotated[bool, typer.Option("--all", "--closed", help="Include closed tickets (hidden unless asked for).")] = False,
    limit: Annotated[int, typer.Option("--limit", metavar="COUNT", min=1, max=1000, help="Show at most this many tickets.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """List tickets, newest first; closed ones only with --all. A late first response is marked OVERDUE.

    Examples:
      helpline ticket list --status new --status open --mine
      helpline ticket list --overdue
      helpline ticket list --sort due --due-before 2026-12-02T17:00
    """
    if mine:
        assignee = credentials.load_login().username
    before = _when(due_before) if due_before else None
    if sort is None:
        sort = TicketSort.DUE if overdue or before else TicketSort.NEWEST
    with credentials.connect() as client:
        tickets = client.tickets(status=status or (), assignee=assignee, limit=limit, closed=show_all,
                                 overdue=overdue, due_before=before, sort=sort)
    if json_out:
        output.print_json(tickets)
        return
    if not tickets:
        output.say("No tickets match." if show_all or status else "No tickets match (closed ones are hidden; add --all).")
        return
    output.table(None, ["Ticket", "Status", "Priority", "Assignee", "First response", "Title"], _ticket_rows(tickets))


@ticket_app.command("show")
def ticket_show(ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")], json_out: JsonOpt = False) -> None:
    """Show a ticket with its timeline and linked PCs.

    Example: helpline ticket show T-1042
    """
    number = parse_ticket_ref(ticket)
    with credentials.connect() as client:
        t = client.ticket(number)
    if json_out:
        output.print_json(t)
        return
    _show_ticket(t)


@ticket_app.command("update")
def ticket_update(
    ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")],
    status: Annotated[TicketStatus | None, typer.Option("--status", "-s", help="The new status.")] = None,
    assign: Annotated[str | None, typer.Option("--assign", metavar="USER", help="Username of the engineer to assign.")] = None,
    unassign: Annotated[bool, typer.Option("--unassign", help="Leave the ticket with no engineer.")] = False,
    priority: Annotated[Priority | None, typer.Option("--priority", "-p", help="The new priority.")] = None,
    title: Annotated[str | None, typer.Option("--title", metavar="TITLE", help="The new title.")] = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Change a ticket's status, assignee, priority or title. Closing asks first (--yes to skip).

    Example: helpline ticket update T-1042 --status open --assign alice
    """
    number = parse_ticket_ref(ticket)
    body: dict = {}
    if status:
        body["status"] = status.value
    if assign and unassign:
        raise InvalidInputError("Give --assign or --unassign, not both.")
    if assign:
        body["assignee"] = assign
    if unassign:
        body["assignee"] = ""
    if priority:
        body["priority"] = priority.value
    if title:
        body["title"] = title
    if not body:
        raise InvalidInputError("Nothing to change.", hint="Give --status, --assign, --unassign, --priority or --title.")
    changes = parse_input(TicketUpdate, **body)
    with credentials.connect() as client:
        if status is TicketStatus.CLOSED and not confirm_close(client, number, yes):
            return
        t = client.update_ticket(number, changes)
    if json_out:
        output.print_json(t)
        return
    output.say(f"{t.number}: status {t.status.value}, assignee {t.assignee or '—'}, priority {t.priority.value}.")


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking (for scripts).")]


def confirm_close(client: HelplineClient, number: int, yes: bool) -> bool:
    """Ask before closing a ticket; whether to go on. Without a terminal, closing needs --yes (one slip must not close a ticket)."""
    if yes:
        return True
    label = ticket_label(number)
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise InvalidInputError(f"Closing {label} needs a confirmation and there is no terminal to ask.",
                                hint=f"Add --yes to close it: helpline ticket close {label} --yes")
    t = client.ticket(number)
    if t.status is TicketStatus.CLOSED:
        return True  # nothing changes; the server answers as it always does
    question = printable(f"Close {label} '{short_title(t.title)}'? It takes no new pairing codes until reopened.",
                         multiline=False)
    if typer.confirm(question, default=False, err=True):
        return True
    output.say(f"Nothing was changed; {label} stays {t.status.value}.")
    return False


@ticket_app.command("close")
def ticket_close(
    ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")],
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Close a ticket, after asking (--yes to skip). `helpline ticket reopen` brings it back.

    Example: helpline ticket close T-1042
    """
    number = parse_ticket_ref(ticket)
    with credentials.connect() as client:
        if not confirm_close(client, number, yes):
            return
        t = client.update_ticket(number, TicketUpdate(status=TicketStatus.CLOSED))
    if json_out:
        output.print_json(t)
        return
    output.say(f"{t.number} is closed. Reopen it with `helpline ticket reopen {t.number}`.")


@ticket_app.command("reopen")
def ticket_reopen(
    ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")],
    json_out: JsonOpt = False,
) -> None:
    """Reopen a closed or resolved ticket (recorded in the audit log and on the timeline).

    Example: helpline ticket reopen T-1042
    """
    number = parse_ticket_ref(ticket)
    with credentials.connect() as client:
        t = client.reopen_ticket(number)
    if json_out:
        output.print_json(t)
        return
    output.say(f"{t.number} is open again.")


@ticket_app.command("note")
def ticket_note(
    ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")],
    message: Annotated[str, typer.Argument(metavar="MESSAGE", help="The note's text.")],
    json_out: JsonOpt = False,
) -> None:
    """Add a note to a ticket's timeline (the user sees it in `helpline status`).

    Examples:
      helpline ticket note T-1042 "Replaced the power supply; please try again."
      helpline ticket note 1042 "Called the user, no answer" --json
    """
    number = parse_ticket_ref(ticket)
    note = parse_input(NoteCreate, message=message)
    with credentials.connect() as client:
        t = client.add_note(number, note)
    if json_out:
        output.print_json(t)
        return
    output.say(f"Note added to {t.number}.")


def _attachment(t: TicketDetail, ref: str) -> AttachmentPublic:
    """The attachment of ``t`` whose id is ``ref`` or starts with it (unique); NotFoundError or InvalidInputError."""
    wanted = ref.strip().lower()
    found = [a for a in t.attachments if a.id == wanted] or [a for a in t.attachments if wanted and a.id.startswith(wanted)]
    if not found:
        raise NotFoundError(f"{t.number} has no attachment {printable(ref, multiline=False)}.",
                            hint=f"See its attachments with `helpline ticket show {t.number}`.")
    if len(found) > 1:
        raise InvalidInputError(f"{printable(ref, multiline=False)} could be any of: " + ", ".join(a.id for a in found) + ".",
                                hint="Give more of the id.")
    return found[0]


@ticket_app.command("attachment")
def ticket_attachment(
    ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")],
    attachment_id: Annotated[str, typer.Argument(metavar="ID", help="The attachment's id (or its start), as `helpline ticket show` lists it.")],
    directory: Annotated[Path, typer.Option("--dir", "-d", metavar="DIR", help="The folder to save it in (default: the current one).")] = Path("."),
    json_out: JsonOpt = False,
) -> None:
    """Save a file a user attached to a reply; its name is made safe and it never overwrites a file.

    Example: helpline ticket attachment T-1042 3f2c --dir ~/cases/T-1042
    """
    number = parse_ticket_ref(ticket)
    with credentials.connect() as client:
        chosen = _attachment(client.ticket(number), attachment_id)
        folder = directory.expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        dest = contained(folder.resolve(), safe_component(chosen.filename, fallback="attachment"))
        if dest.exists():
            raise ConflictError(f"{dest} already exists.", hint="Save it elsewhere with --dir DIR.")
        partial = contained(folder.resolve(), dest.name + ".part")  # a link planted there is refused, never followed
        if partial.exists():
            raise ConflictError(f"{partial} is in the way.", hint="Remove it, or save elsewhere with --dir DIR.")
        try:
            size, sha256 = client.download_attachment(number, chosen.id, partial)
            if sha256 != chosen.sha256:
                raise DamagedError("The file arrived damaged (SHA-256 mismatch).", hint="Try again.")
            partial.rename(dest)
        finally:
            partial.unlink(missing_ok=True)
    if json_out:
        output.print_json({"attachment": chosen, "path": str(dest)})
        return
    output.say(f"Saved {output.esc(chosen.filename)} ({output.size(size)}) from {output.esc(chosen.hostname)} to {output.esc(dest)}")


@ticket_app.command("pair-code")
def ticket_pair_code(ticket: Annotated[str, typer.Argument(metavar="TICKET", help="Ticket number, like T-1042.")], json_out: JsonOpt = False) -> None:
    """Issue a one-time, short-lived code that links the user's PC to the ticket (the server sets how long it lives).

    Example: helpline ticket pair-code T-1042   then read the code to the user
    """
    number = parse_ticket_ref(ticket)
    with credentials.connect() as client:
        code = client.create_pairing_code(number)
    if json_out:
        output.print_json(code)
        return
    left = output.span(max(0.0, (code.expires_at - datetime.now(UTC)).total_seconds()))
    output.say(f"Pairing code for {code.ticket}: [bold]{code.code}[/] (single use, valid for {left}, until {output.local_time(code.expires_at)}).")
    output.say(f"On the user's PC: helpline pair {code.code} --server {output.esc(credentials.load_login().server_url)}")


@ssh_key_app.command("add")
def ssh_key_add(path: Annotated[Path, typer.Argument(metavar="FILE", help="Your public key file, e.g. ~/.ssh/id_ed25519.pub ('-' for stdin).")]) -> None:
    """Register an SSH public key for remote sessions.

    Example: helpline ssh-key add ~/.ssh/id_ed25519.pub
    """
    text = sys.stdin.read() if str(path) == "-" else path.expanduser().read_text()
    body = parse_input(SshKeyCreate, public_key=text.strip())
    with credentials.connect() as client:
        key = client.add_ssh_key(body)
    output.say(output.esc(f"Added {key.algorithm} key {key.fingerprint}."))


@ssh_key_app.command("list")
def ssh_key_list(json_out: JsonOpt = False) -> None:
    """List your SSH public keys.

    Example: helpline ssh-key list
    """
    with credentials.connect() as client:
        keys = client.ssh_keys()
    if json_out:
        output.print_json(keys)
        return
    output.table(None, ["Id", "Type", "Fingerprint", "Comment", "Added"], [(k.id, k.algorithm, k.fingerprint, k.comment, output.local_time(k.created_at)) for k in keys])


@ssh_key_app.command("remove")
def ssh_key_remove(key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id, as `helpline ssh-key list` shows it.")]) -> None:
    """Remove one of your SSH public keys.

    Example: helpline ssh-key remove 3
    """
    with credentials.connect() as client:
        client.remove_ssh_key(key_id)
    output.say(f"Removed key {key_id}.")


# --- API tokens ----------------------------------------------------------------------------

api_token_app = typer.Typer(help="Your API tokens (one per login): list them and revoke the ones you no longer use.",
                            no_args_is_help=True)


@api_token_app.command("list")
def api_token_list(
    account: Annotated[str | None, typer.Option("--account", metavar="USER", help="Another account's tokens (admins).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the API tokens that still work, the one this login uses marked with *.

    Example: helpline token list --account alice
    """
    with credentials.connect() as client:
        tokens = client.account_tokens(account) if account else client.my_tokens()
    if json_out:
        output.print_json(tokens)
        return
    output.table(None, ["", "Id", "Account", "Name", "Created", "Last used", "Expires"],
                 [("*" if t.current else "", t.id, t.account, t.name, output.full_time(t.created_at),
                   output.full_time(t.last_used_at), output.full_time(t.expires_at)) for t in tokens])


@api_token_app.command("revoke")
def api_token_revoke(token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id, as `helpline token list` shows it.")]) -> None:
    """Revoke an API token at once (your own; admins may revoke anyone's).

    Example: helpline token revoke 12
    """
    with credentials.connect() as client:
        t = client.revoke_token(token_id)
    note = " This login used it: log in again to go on." if t.current else ""
    output.say(f"Revoked token {t.id} ({output.esc(t.name)}) of {output.esc(t.account)}.{note}")


def read_new_password(prompt: str, from_stdin: bool) -> str:
    """A new password: from standard input as is, or typed twice on the terminal (InvalidInputError if they differ)."""
    first = read_secret(prompt, from_stdin)
    if not from_stdin and read_secret("Type it again: ", False) != first:
        raise InvalidInputError("The two passwords differ.", hint="Run the command again and type the same password twice.")
    return first


def change_password(
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the current, then the new password from "
                                                 "standard input, one a line.")] = False,
) -> None:
    """Change your own password. Your other logins end; this one stays logged in.

    Example: helpline account password
    """
    current = read_secret("Current password: ", password_stdin)
    new = read_new_password("New password: ", password_stdin)
    body = parse_input(PasswordChange, current_password=current, new_password=new)
    with credentials.connect() as client:
        done = client.change_password(body)
    ended = "no other login" if done.ended_tokens == 0 else (
        "1 other login" if done.ended_tokens == 1 else f"{done.ended_tokens} other logins")
    output.say(f"Password changed; ended {ended}.")
