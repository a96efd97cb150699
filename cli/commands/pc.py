"""`helpline pc …`: an engineer's requests to one PC — snapshot now, restore (also from another PC),
browse and diff its snapshots — followed to their end with a progress bar.

Every request goes through the server, which signs it for the PC; the PC checks
it, runs it once and reports back. What the PC reports (details, file names) is
its own text: shown made printable, never as markup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from agent.client import HelplineClient
from cli import credentials, output
from protocol.errors import ConflictError, ExitStatus, ForbiddenError, HelplineError, InvalidInputError, UnavailableError
from protocol.pc_requests import (
    DEFAULT_EXPIRES_MINUTES,
    BrowseResult,
    DiffResult,
    PcRequestCreate,
    PcRequestKind,
    PcRequestPublic,
    PcRequestState,
    RestoreResult,
    SnapshotResult,
)
from protocol.schemas import parse_input
from protocol.tickets import canonical_ticket
from protocol.times import parse_moment

PANEL = "For engineers"
#: Seconds each follow-up poll asks the server to hold the answer for.
FOLLOW_WAIT = 25

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]
HostArg = Annotated[str, typer.Argument(metavar="PC", help="The PC: its host name, agent id or a unique start of it.")]
TicketOpt = Annotated[str | None, typer.Option("--ticket", "-t", metavar="TICKET", help="Put the request and its result on this ticket's timeline.")]
ExpiresOpt = Annotated[int, typer.Option("--expires", metavar="MINUTES", min=1, max=7 * 24 * 60, help="How long the PC (and its user) have to start it.")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Return once the request is queued; follow it later with `helpline pc requests PC ID --follow`.")]

pc_app = typer.Typer(help="Ask a PC for a snapshot, a restore, or a look into its snapshots; follow what it does.",
                     no_args_is_help=True)


def _ticket(ticket: str | None) -> str | None:
    return canonical_ticket(ticket) if ticket else None


def _state_words(r: PcRequestPublic) -> str:
    words = {
        PcRequestState.QUEUED: "waiting for the PC to fetch it",
        PcRequestState.DELIVERED: "the PC has it",
        PcRequestState.WAITING_CONSENT: "waiting for the PC's user to agree",
        PcRequestState.RUNNING: "running",
        PcRequestState.DONE: "done",
        PcRequestState.FAILED: "failed",
        PcRequestState.REFUSED: "refused",
        PcRequestState.EXPIRED: "expired",
    }[r.state]
    return words + (f" ({r.detail})" if r.detail and r.state not in (PcRequestState.DONE,) else "")


def follow(client: HelplineClient, request: PcRequestPublic, *, show: bool = True) -> PcRequestPublic:
    """Wait for ``request`` to end, showing its progress (a bar on a terminal, a line per state otherwise).

    Ctrl-C stops following, not the request (exit status 130, with how to follow it again).
    """
    try:
        return _follow(client, request, show=show)
    except KeyboardInterrupt:
        raise HelplineError("Stopped following; the request goes on.", status=ExitStatus.INTERRUPTED,
                            hint=f"Follow it again with `helpline pc requests {request.agent_id[:8]} {request.id[:8]} "
                                 "--follow`.") from None


def _follow(client: HelplineClient, request: PcRequestPublic, *, show: bool) -> PcRequestPublic:
    current = request
    if not show:
        while not current.final:
            current = client.pc_request(current.agent_id, current.id, wait=FOLLOW_WAIT, seen=current.version)
        return current
    console = output.err_console()
    if console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(output.esc(_state_words(current))[:80], total=1.0)
            while not current.final:
                current = client.pc_request(current.agent_id, current.id, wait=FOLLOW_WAIT, seen=current.version)
                bar.update(task, description=output.esc(_state_words(current))[:80],
                           completed=current.progress if current.progress is not None else 0.0)
        return current
    said = None
    while True:
        line = f"{current.state.value}: {_state_words(current)}"
        if current.state != said:
            console.print(output.esc(f"PC {current.hostname}: {line}"))
            said = current.state
        if current.final:
            return current
        current = client.pc_request(current.agent_id, current.id, wait=FOLLOW_WAIT, seen=current.version)


def outcome(r: PcRequestPublic) -> PcRequestPublic:
    """``r`` if it is done; else the error its end stands for (refused 5, expired 9, failed 1)."""
    what = f"The {r.kind.value} request on PC {r.hostname}"
    if r.state == PcRequestState.DONE:
        return r
    if r.state == PcRequestState.REFUSED:
        raise ForbiddenError(f"{what} was refused: {r.detail or 'no reason given'}",
                             hint="If the PC's user refused, talk to them; a PC refuses requests it cannot verify.")
    if r.state == PcRequestState.EXPIRED:
        raise UnavailableError(f"{what} expired before it started.",
                               hint="Is the PC on and its agent service running? A restore waits for its user to approve it "
                                    "(`helpline requests` on that PC).")
    if r.state == PcRequestState.FAILED:
        raise HelplineError(f"{what} failed: {r.detail or 'no detail'}")
    raise ConflictError(f"{what} is still {r.state.value}.",
                        hint=f"Follow it with `helpline pc requests {r.hostname} {r.id[:8]} --follow`.")


def _ask(pc: str, kind: PcRequestKind, params: dict, *, ticket: str | None, expires: int, wait: bool,
         json_out: bool) -> PcRequestPublic:
    """Make the request, then follow it to its end unless ``wait`` is off; return it as it ended (or stands)."""
    body = parse_input(PcRequestCreate, kind=kind, params=params, ticket=_ticket(ticket), expires_minutes=expires)
    with credentials.connect() as client:
        made = client.create_pc_request(pc, body)
        if not wait:
            return made
        if not json_out:
            output.err_console().print(output.esc(f"Request {made.id[:8]} sent to PC {made.hostname}; "
                                                  f"it expires {output.local_time(made.expires_at)} unless started."))
        return follow(client, made, show=not json_out)


def _done(r: PcRequestPublic, json_out: bool) -> bool:
    """Print ``r`` as JSON (and stop here: True), or check that it succeeded (raising its error otherwise)."""
    if json_out:
        output.print_json(r)
        if not r.final:
            return True
        outcome(r)
        return True
    if not r.final:
        output.say(f"Request [bold]{r.id[:8]}[/] queued for PC {output.esc(r.hostname)}; "
                   f"follow it with `helpline pc requests {output.esc(r.hostname)} {r.id[:8]} --follow`.")
        return True
    outcome(r)
    return False


# --- commands ---------------------------------------------------------------------------------------------


@pc_app.command("snapshots")
def snapshots(
    pc: HostArg,
    limit: Annotated[int, typer.Option("--limit", metavar="COUNT", min=1, max=500, help="Show at most this many runs.")] = 30,
    json_out: JsonOpt = False,
) -> None:
    """Show how protected a PC is and the snapshot runs it reported, newest first.

    Example: helpline pc snapshots pc-ana
    """
    with credentials.connect() as client:
        protection = client.agent_protection(pc)
        runs = client.agent_snapshots(pc, limit=limit)
    if json_out:
        output.print_json({"protection": protection, "snapshots": runs})
        return
    output.say(output.esc(f"PC {protection.hostname}: {protection.words}"))
    if not runs:
        output.say("It has reported no snapshot runs yet.")
        return
    output.table(None, ["Snapshot", "Repository", "Status", "Finished", "Files", "Added", "Problem"],
                 [(r.snapshot_id[:8] if r.snapshot_id else "—", r.repository, r.status, output.local_time(r.finished_at),
                   r.total_files, output.size(r.bytes_added), r.error or (r.warnings[0] if r.warnings else ""))
                  for r in runs])


@pc_app.command("snapshot-now")
def snapshot_now(
    pc: HostArg,
    repository: Annotated[str | None, typer.Option("--repository", metavar="NAME", help="Only this repository: local or server (default: the PC's policy).")] = None,
    ticket: TicketOpt = None,
    expires: ExpiresOpt = DEFAULT_EXPIRES_MINUTES,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Ask a PC to take a snapshot now, and follow it.

    Example: helpline pc snapshot-now pc-ana --ticket T-1042
    """
    params = {"repository": repository} if repository else {}
    r = _ask(pc, PcRequestKind.SNAPSHOT, params, ticket=ticket, expires=expires, wait=not no_wait, json_out=json_out)
    if _done(r, json_out):
        return
    for run in SnapshotResult.model_validate(r.result or {}).runs:
        line = (f"{run.repository}: {run.status}, snapshot {run.snapshot_id or '—'}, {run.files_new} new files, "
                f"{output.size(run.bytes_added)} added")
        output.say(output.esc(line + (f" — {run.error}" if run.error else "")))


@pc_app.command("restore")
def restore(
    pc: HostArg,
    paths: Annotated[list[str] | None, typer.Argument(metavar="PATH", help="Absolute paths to bring back (none: every path the PC's policy snapshots; a restore --from names them).")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", "-s", metavar="ID", help="The snapshot to restore from (default: the latest).")] = None,
    at: Annotated[str | None, typer.Option("--at", metavar="TIME", help="The newest snapshot at or before this time: 2026-12-01 17:00, 2026-12-01 (its end), 17:00, yesterday, or how long ago: 3h, 2 days.")] = None,
    into: Annotated[str | None, typer.Option("--into", metavar="DIR", help="Restore into this folder on the PC (an absolute path) instead of beside the originals.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Put the files back in their place; what they replace is kept aside.")] = False,
    source: Annotated[str | None, typer.Option("--from", metavar="OTHER_PC", help="Restore another PC's server-side snapshot onto this one (a replacement PC).")] = None,
    user: Annotated[str | None, typer.Option("--user", metavar="NAME", help="The account on the PC whose files these are (they get its ownership).")] = None,
    ticket: TicketOpt = None,
    expires: ExpiresOpt = DEFAULT_EXPIRES_MINUTES,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Restore files on a PC from one of its snapshots (its user is asked to agree), or onto a new PC from an old one.

    By default the files come back beside the originals; --into puts them in a folder, --overwrite in
    their place (keeping what they replace).

    Examples:
      helpline pc restore pc-ana /home/ana/Documents/report.odt --at 2026-12-01T17:00 --ticket T-1042
      helpline pc restore pc-ana-new --from pc-ana --into /home/ana/restored
    """
    if snapshot and at:
        raise InvalidInputError("Give --snapshot or --at, not both.")
    if into and overwrite:
        raise InvalidInputError("Give --into or --overwrite, not both.")
    params: dict = {"paths": list(paths or []), "target": f"folder:{into}" if into else ("overwrite" if overwrite else "beside")}
    if snapshot:
        params["snapshot"] = snapshot
    if at:
        params["at"] = parse_moment(at).isoformat()
    if source:
        params["source_agent_id"] = source
    if user:
        params["user"] = user
    r = _ask(pc, PcRequestKind.RESTORE, params, ticket=ticket, expires=expires, wait=not no_wait, json_out=json_out)
    if _done(r, json_out):
        return
    restored = RestoreResult.model_validate(r.result or {}).restored
    output.say(output.esc(f"Restored {len(restored)} path(s) on PC {r.hostname}:"))
    for item in restored:
        line = f"  {item.path} → {item.placed_at}" + (f" (snapshot {item.snapshot_id[:8]})" if item.snapshot_id else "")
        output.say(output.esc(line + (f"; what it replaced is kept in {item.kept_at}" if item.kept_at else "")))


@pc_app.command("diagnostics")
def diagnostics(
    pc: HostArg,
    ticket: Annotated[str, typer.Option("--ticket", "-t", metavar="TICKET", help="The ticket the PC is linked to; the bundle goes there.")],
    expires: ExpiresOpt = DEFAULT_EXPIRES_MINUTES,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Ask a PC for fresh diagnostics (its user agrees first); the bundle goes to the ticket.

    Example: helpline pc diagnostics pc-ana --ticket T-1042
    """
    r = _ask(pc, PcRequestKind.DIAGNOSTICS, {}, ticket=ticket, expires=expires, wait=not no_wait, json_out=json_out)
    if _done(r, json_out):
        return
    result = r.result or {}
    output.say(output.esc(f"Bundle {str(result.get('bundle_id', ''))[:8]} ({output.size(result.get('size') or 0)}, "
                          f"{result.get('files', 0)} files) from PC {r.hostname} is on {result.get('ticket', ticket)}; "
                          f"read it with `helpline diag show {result.get('ticket', ticket)}`."))


@pc_app.command("files")
def files(
    pc: HostArg,
    snapshot: Annotated[str, typer.Argument(metavar="SNAPSHOT", help="The snapshot's id (or its start), or latest.")],
    path: Annotated[str, typer.Argument(metavar="PATH", help="The folder to list (an absolute path on the PC).")] = "/",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="List everything below the folder, not one level.")] = False,
    source: Annotated[str | None, typer.Option("--from", metavar="OTHER_PC", help="List another PC's server-side snapshot (for a replacement restore).")] = None,
    expires: ExpiresOpt = 10,
    json_out: JsonOpt = False,
) -> None:
    """List the files of a PC's snapshot under a folder (the PC answers with the first 1000 entries).

    Example: helpline pc files pc-ana latest /home/ana/Documents
    """
    params = {"snapshot": snapshot, "path": path, "recursive": recursive}
    if source:
        params["source_agent_id"] = source
    r = _ask(pc, PcRequestKind.BROWSE, params, ticket=None, expires=expires, wait=True, json_out=json_out)
    if _done(r, json_out):
        return
    listing = BrowseResult.model_validate(r.result or {})
    output.table(f"Snapshot {(listing.snapshot_id or snapshot)[:8]}: {path}", ["Type", "Size", "Modified", "Path"],
                 [(e.type, output.size(e.size) if e.size is not None and e.type == "file" else "", output.local_time(e.mtime),
                   e.path) for e in listing.nodes])
    if listing.truncated:
        output.say("Only the first entries are shown; list a folder further down.")


@pc_app.command("diff")
def diff(
    pc: HostArg,
    first: Annotated[str, typer.Argument(metavar="BEFORE", help="The earlier snapshot (id or its start).")],
    second: Annotated[str, typer.Argument(metavar="AFTER", help="The later snapshot (id, its start, or latest).")],
    path: Annotated[str | None, typer.Option("--path", metavar="PATH", help="Only changes under this absolute path.")] = None,
    expires: ExpiresOpt = 10,
    json_out: JsonOpt = False,
) -> None:
    """Show what changed between two of a PC's snapshots (+ added, - removed, M modified).

    Example: helpline pc diff pc-ana 4f2a91c0 latest --path /home/ana/Documents
    """
    params = {"snapshot": first, "other": second}
    if path:
        params["path"] = path
    r = _ask(pc, PcRequestKind.DIFF, params, ticket=None, expires=expires, wait=True, json_out=json_out)
    if _done(r, json_out):
        return
    changes = DiffResult.model_validate(r.result or {})
    output.table(f"{first} → {second}", ["Change", "Path"], [(c.modifier, c.path) for c in changes.changes])
    counts = {m: sum(1 for c in changes.changes if c.modifier == m) for m in ("+", "-")}
    output.say(f"{counts['+']} added, {counts['-']} removed, {len(changes.changes) - counts['+'] - counts['-']} changed"
               + (" (only the first ones are listed)." if changes.truncated else "."))


@pc_app.command("requests")
def requests(
    pc: HostArg,
    request_id: Annotated[str | None, typer.Argument(metavar="ID", help="One request (its id or start) to show or follow.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only requests still under way.")] = False,
    follow_it: Annotated[bool, typer.Option("--follow", "-f", help="Follow the request (or the newest one under way) to its end, with a progress bar.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List a PC's requests, newest first, or show and follow one.

    Examples:
      helpline pc requests pc-ana --active
      helpline pc requests pc-ana 3f2c9a1e --follow
    """
    with credentials.connect() as client:
        if request_id is None and not follow_it:
            listed = client.pc_requests(pc, active=active)
            if json_out:
                output.print_json(listed)
                return
            if not listed:
                output.say("No requests match." if active else "This PC has had no requests.")
                return
            now = datetime.now(UTC)
            output.table(None, ["Id", "Kind", "State", "By", "Ticket", "Made", "Detail"],
                         [(r.id[:8], r.kind.value, r.state.value + (f" {round((r.progress or 0) * 100)}%"
                                                                      if r.state == PcRequestState.RUNNING else ""),
                           r.requested_by, r.ticket or "—", output.local_time(r.created_at, now=now), r.detail)
                          for r in listed])
            return
        if request_id is None:
            under_way = client.pc_requests(pc, active=True, limit=1)
            if not under_way:
                raise InvalidInputError("No request of this PC is under way.", hint="Name one: helpline pc requests PC ID --follow")
            current = under_way[0]
        else:
            current = client.pc_request(pc, request_id)
        if follow_it:
            current = follow(client, current, show=not json_out)
    if json_out:
        output.print_json(current)
        return
    output.say(output.esc(f"{current.id} {current.kind.value} on PC {current.hostname}: {_state_words(current)}"))
    output.say(output.esc(f"Asked by {current.requested_by_name} ({current.requested_by})"
                          f"{' for ' + current.ticket if current.ticket else ''}, {output.local_time(current.created_at)}; "
                          f"expires {output.local_time(current.expires_at)}."))
    if current.final:
        outcome(current)
