"""`helpline share`: one command from "it's broken" to a ticket with the facts."""

from __future__ import annotations

import functools
import gc
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from agent.local import this_pc
from cli import output
from cli.commands.user import PANEL, JsonOpt, ServerOpt, interactive, pick_ticket, quoted_title, response_line
from protocol.errors import ConfigError, ExitStatus, HelplineError, InvalidInputError, QuotaExceededError, UnavailableError
from protocol.tickets import parse_ticket_ref, ticket_label
from protocol.untrusted import printable

if TYPE_CHECKING:  # the upload code (the server's client) loads only when a bundle is sent
    from agent.upload import OutboxEntry, QueuedDelivery

QUESTIONS = (
    ("what", "What happened?"),
    ("since", "Since when, and how often?"),
    ("tried", "What have you already tried?"),
)


_interactive = interactive


def _ask(request) -> None:
    if not _interactive():
        return
    for field, question in QUESTIONS:
        if not getattr(request, field):
            setattr(request, field, typer.prompt(question, default="", show_default=False, err=True, prompt_suffix=" ").strip())


def _collect(gathering):
    """The bundle the gathering makes (it began before the questions), with a bar on a terminal."""
    if not sys.stderr.isatty():
        return gathering.result()
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn  # bars only on a terminal

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  console=output.err_console(), transient=True) as bar:
        task = bar.add_task("Gathering diagnostics", total=None)
        done: set[str] = set()

        def tick(name: str, status: str) -> None:
            if status != "running":
                done.add(name)
            bar.update(task, description=f"Gathering diagnostics ({name})", completed=len(done))

        return gathering.result(progress=tick)


def _ready_for_what_follows(*, sending: bool) -> None:
    """Load the code of the steps after the gathering (the table of what will be sent; the upload) while the
    gathering process still works: time the person would otherwise wait for once the bundle is made."""
    import rich.table  # noqa: F401
    import rich.text  # noqa: F401

    output.console()
    if sending:
        import agent.upload  # noqa: F401


def send_question(choice) -> str:
    """The question asked before anything is sent; it names the ticket ("Send to T-1002 'Laptop very slow'?")."""
    if choice.is_new:
        return "Open a new ticket and send this to your support team?"
    named = f"{choice.number} {quoted_title(choice.ticket.title)}" if choice.ticket else choice.number
    return printable(f"Send to {named}?", multiline=False)


def _show_preview(prepared) -> None:
    rows = []
    for p in prepared.bundle.preview:
        rows.append((p.category, p.files, output.size(p.bytes), p.redactions or "", p.dropped or ""))
    output.table("What will be sent", ["Category", "Files", "Size", "Secrets removed", "Left out"], rows)
    output.say(f"Bundle: {output.size(prepared.size)} (compressed). Read all of it first: {output.esc(prepared.report_html)}")


# Set once a bundle is queued for sending, so an interruption says the right thing about it.
_SENDING = {"queued": False}


def _deliver(entry: OutboxEntry) -> None:
    _SENDING["queued"] = True
    if not sys.stderr.isatty():
        this_pc().deliver(entry)
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress(TextColumn("Uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  console=output.err_console(), transient=True) as bar:
        task = bar.add_task("upload", total=entry.size)
        this_pc().deliver(entry, progress=lambda sent, total: bar.update(task, completed=sent, total=total))


def _queued_line(done: QueuedDelivery) -> str:
    """One line saying what became of a queued bundle."""
    from agent.upload import Delivery

    entry = done.entry
    if done.result is Delivery.UNLINKED:
        return f"{entry.ticket}: waiting (this PC is not linked to {entry.server_url} any more)"
    if done.result is Delivery.DELIVERED:
        return f"{entry.ticket}: delivered ({output.size(done.bundle.size)})"
    if done.result is Delivery.WAITING:
        return f"{entry.ticket}: still waiting for the server"
    return f"{entry.ticket}: refused — {done.reason}"


def send_queued() -> list[str]:
    """Try to deliver bundles queued earlier; return what happened to each, one line each."""
    return [_queued_line(done) for done in this_pc().send_queued()]


def share(
    code: Annotated[str | None, typer.Option("--code", "-c", metavar="CODE", help="Pairing code from your engineer: links this PC to their ticket.")] = None,
    ticket: Annotated[str | None, typer.Option("--ticket", "-t", metavar="TICKET", help="A ticket this PC is already linked to, like T-1042.")] = None,
    new: Annotated[bool, typer.Option("--new", help="Open a new ticket even though this PC is linked to an open one.")] = False,
    server: ServerOpt = None,
    what: Annotated[str, typer.Option("--what", metavar="TEXT", help="What happened (asked if missing and on a terminal).")] = "",
    since: Annotated[str, typer.Option("--since", metavar="TEXT", help="Since when, and how often.")] = "",
    tried: Annotated[str, typer.Option("--tried", metavar="TEXT", help="What you already tried.")] = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send without asking (for scripts).")] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Gather and show what would be sent, then stop (the bundle stays a week for you to read).")] = False,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", "-x", metavar="CATEGORY", help="Leave a category out (repeatable, or several with commas): system, hardware, network, processes, services, software, logs, crashes, environment, …")] = None,
    logs: Annotated[list[str] | None, typer.Option("--logs", metavar="GLOB", help="Add application logs (repeatable), e.g. '~/.config/MyApp/*.log'.")] = None,
    output_path: Annotated[str | None, typer.Option("--output", "-o", metavar="FILE", help="Write the bundle to this file (or a new file in this folder) instead of sending it.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --output: replace the file if it exists.")] = False,
    deadline: Annotated[float | None, typer.Option("--deadline", metavar="SECONDS", min=1, max=300, help="Seconds the gathering may take (default 20).")] = None,
    redact_network: Annotated[bool, typer.Option("--redact-network", help="Also replace IP and MAC addresses with pseudonyms.")] = False,
    redact_names: Annotated[bool, typer.Option("--redact-names", help="Also replace host and user names with pseudonyms.")] = False,
    send_queued_only: Annotated[bool, typer.Option("--send-queued", help="Only send bundles queued while the server was unreachable.")] = False,
    then_session: Annotated[bool, typer.Option("--session", help="After sending, wait for your engineer to connect, as `helpline session` does.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Share this PC's diagnostics with support: gather, remove secrets, show you, send.

    It goes to the ticket this PC is linked to when one is open (it asks which
    when several are), and opens a new ticket when none is open or with --new.

    Examples:
      helpline share --code 7KQ2-M9XD --server https://help.example.com
      helpline share                         (after `helpline pair CODE`)
      helpline share --ticket T-1042 --yes
      helpline share --output ~/diagnostics.tar.gz     (no server needed)
      helpline share --output /media/usb/            (a new file in that folder)
      helpline share --session               (then let your engineer connect)

    Without --yes it asks before sending anything, naming the ticket.
    """
    if send_queued_only:
        lines = send_queued()
        if json_out:
            output.print_json(lines)
        else:
            output.say(output.esc("\n".join(lines)) if lines else "Nothing is waiting to be sent.")
        return
    if sum(1 for given in (code, ticket, new) if given) > 1:
        raise InvalidInputError("Give one of --code, --ticket and --new.")
    if output_path is not None and (code or ticket or new):
        raise InvalidInputError("--output keeps the bundle on this PC; --code, --ticket and --new are for sending it.",
                                hint="Leave out --output to send the bundle, or the others to save it.")
    if output_path is not None and preview:
        raise InvalidInputError("--preview stops before the bundle is saved; --output saves it.",
                                hint="Leave out --preview: --output shows the same table before it saves.")
    if then_session:
        _check_session_possible(preview=preview, output_path=output_path, json_out=json_out, send_queued_only=send_queued_only)
    if not (yes or preview or output_path is not None) and not _interactive():
        raise InvalidInputError("There is no terminal to ask before sending.", hint="Add --yes to send without asking, or --preview to look first.")
    from agent.gathering import Gathering
    from agent.share import ShareRequest, exclusions, output_target, unmatched_logs

    target = output_target(output_path, overwrite=overwrite) if output_path is not None else None  # refused first

    label = ticket_label(parse_ticket_ref(ticket)) if ticket else None
    pc = this_pc()
    previous = pc.link()
    if not (target or preview or server or previous):
        # Say it now, not after gathering and asking: with no server there is nowhere to send to.
        raise ConfigError("This PC does not know its Helpline server yet.",
                          hint="Add --server URL (your support team tells you the address), or save the bundle with --output FILE.")
    request = ShareRequest(what=what, since=since, tried=tried, exclude=exclusions(exclude or ()), logs=list(logs or ()),
                           deadline=deadline, redact_network=redact_network, redact_names=redact_names,
                           server_url=server or (previous.server_url if previous else None),
                           ticket=label)
    for pattern in unmatched_logs(request.logs):
        output.err_console().print(f"[bold]note:[/] no file matches --logs {output.esc(pattern)}; the share goes on without it.")
    choice = None
    # The collectors start now, in the gathering process, and work while the server is asked about the ticket and
    # the person answers the questions; the ticket and the answers reach the bundle when it is finished
    # (Gathering.result). A wrong ticket stops the gathering before anything is kept.
    gathering = Gathering(request)
    try:
        if not (target or preview):
            choice = _choose(pc, previous, code=code, ticket=ticket, new=new, server=server)
            request.ticket, request.new_ticket = choice.number, choice.is_new
            request.ticket_title = choice.ticket.title if choice.ticket else None
        _ask(request)
        _ready_for_what_follows(sending=target is None and not preview)
        prepared = _collect(gathering)
    except BaseException:
        gathering.cancel()  # what it gathered goes before the error is told
        raise
    finally:
        if then_session:
            gc.enable()  # `helpline` turned the cycle collector off while the bundle was made; a session runs long
    try:
        if not json_out:
            _show_preview(prepared)
        if preview:
            if json_out:
                output.print_json({"bundle_dir": str(prepared.bundle.out_dir), "size": prepared.size, "preview": [p.to_dict() for p in prepared.bundle.preview]})
            else:
                output.say(f"Nothing was sent. The bundle is in {output.esc(prepared.bundle.out_dir)}")
            prepared.keep()  # for the person to read; a later share removes it after a week
            prepared = None
            return
        if target is not None:
            from agent.share import save_archive

            save_archive(prepared.archive, target, overwrite=overwrite)
            if json_out:
                output.print_json({"output": str(target), "size": prepared.size, "sha256": prepared.sha256})
            else:
                output.say(f"Saved to {output.esc(target)} ({output.size(prepared.size)}, sha256 {prepared.sha256[:16]}…).")
            return
        if not yes and not typer.confirm(send_question(choice), default=False, err=True):
            output.say("Nothing was sent.")
            return
        if choice.is_new:
            choice = pc.open_ticket(request, server_url=server)
        number, the_ticket, window = choice.number, choice.ticket, choice.response_minutes
        entry = pc.queue(prepared.archive, number)
        prepared.discard_in_background()  # the archive waits in the outbox; its work folder goes while it is sent
        try:
            _deliver(entry)
            if the_ticket is None:
                the_ticket = pc.tickets(number)[0]
        except (UnavailableError, QuotaExceededError) as exc:  # the bundle waits in the outbox: say so
            raise type(exc)(
                f"{exc.message} The bundle is queued for {number}.",
                hint="It is sent the next time you run `helpline share --send-queued` (or share again).",
            ) from exc
        extra = send_queued() if pc.pending() else []
        window = window if window is not None else (the_ticket.first_response_due - the_ticket.created_at).total_seconds() / 60
        if json_out:
            output.print_json({"ticket": the_ticket.number, "size": prepared.size, "sha256": prepared.sha256,
                               "first_response_due": the_ticket.first_response_due, "response_minutes": window, "queued": extra})
            return
        # The promise as the user's `helpline status` tells it: answered, due, or late.
        tail = response_line(the_ticket) or f"Status: {the_ticket.status}."
        output.say(f"Ticket [bold]{the_ticket.number}[/] — your diagnostics were delivered. {tail}")
        for line in extra:
            output.say(f"Also sent from the queue: {output.esc(line)}")
    finally:
        if prepared is not None:
            prepared.discard()
    if then_session:
        from cli.commands.session import run_session

        run_session(the_ticket.number)


def _check_session_possible(*, preview: bool, output_path: str | None, json_out: bool, send_queued_only: bool) -> None:
    """Refuse --session before anything is gathered when no session could follow."""
    from agent.session.offer import check_platform

    if preview or output_path is not None or json_out or send_queued_only:
        raise InvalidInputError("--session follows a share that is sent; it does not go with --preview, --output, --json or --send-queued.")
    check_platform()
    if not _interactive():
        raise InvalidInputError("A remote session needs you at a terminal: only you can approve the engineer's request.",
                                hint="Leave out --session here, and run `helpline session` in a terminal window.")


def _choose(pc, previous, *, code: str | None, ticket: str | None, new: bool, server: str | None):
    """Decide the ticket before gathering: the question and the report name it, and a wrong choice fails fast."""
    try:
        return pc.choose_ticket(code=code, ticket=ticket, new=new, server_url=server,
                                choose=pick_ticket if _interactive() else None)
    except InvalidInputError as exc:
        if exc.hint and exc.hint.startswith("Name one with --ticket"):
            raise InvalidInputError(exc.message, hint=exc.hint.rstrip(".") + ", or open another with --new.") from exc
        raise
    except UnavailableError as exc:
        if previous is not None and previous.tickets and not (code or ticket or new):
            raise UnavailableError(exc.message, hint="To queue the bundle until the server answers, name your ticket: "
                                   f"--ticket {previous.tickets[-1]}.") from exc
        raise


def _share_or_say_nothing_sent(*args, **kwargs) -> None:
    """Run `share`; if the person stops it (Ctrl-C), say whether anything left the PC."""
    _SENDING["queued"] = False
    try:
        share(*args, **kwargs)
    except (KeyboardInterrupt, typer.Abort):
        if _SENDING["queued"]:
            raise HelplineError("Stopped while sending; the bundle stays queued.", status=ExitStatus.INTERRUPTED,
                                hint="Send it later with `helpline share --send-queued`.") from None
        raise HelplineError("Stopped. Nothing was sent.", status=ExitStatus.INTERRUPTED) from None


def register(app: typer.Typer) -> None:
    app.command(name="share", rich_help_panel=PANEL)(functools.wraps(share)(_share_or_say_nothing_sent))
