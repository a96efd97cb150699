"""The user's say on engineers' requests to this PC: see what waits, approve it or refuse it.

A restore (or fresh diagnostics) an engineer asks for waits on the PC until its
user answers here; unanswered, it expires and nothing runs. Any other
`helpline` command the user runs meanwhile says, in one line, that a request waits.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from agent.local import this_pc
from cli import output
from protocol.errors import InvalidInputError

if TYPE_CHECKING:
    from agent.service.consent import WaitingRequest

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of text.")]



class Answer(str, Enum):
    APPROVE = "approve"
    REFUSE = "refuse"


def describe(item: WaitingRequest) -> str:
    """What the request would do, in words: "restore /home/ana/report.odt (latest snapshot) beside the original"."""
    params = item.params
    if item.kind == "restore":
        paths = params.get("paths") or []
        what = "everything" if not paths else ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        when = f"as it was at {params['at']}" if params.get("at") else (
            "from the latest snapshot" if params.get("snapshot", "latest") == "latest" else f"from snapshot {params['snapshot']}")
        target = params.get("target", "beside")
        where = ("over the current files (what they replace is kept aside)" if target == "overwrite" else
                 f"into the folder {target[len('folder:'):]}" if target.startswith("folder:") else "beside the originals")
        source = " from another PC's snapshots (a replacement restore)" if params.get("source_agent_id") else ""
        return f"restore {what} {when}{source}, {where}"
    if item.kind == "diagnostics":
        return f"gather fresh diagnostics and send them to {item.ticket or 'the ticket'}"
    return f"run a {item.kind} request"


def notice() -> str | None:
    """The one line other commands print when a request waits for this PC's user; None when none does."""
    try:
        waiting = this_pc().waiting_requests()
    except Exception:  # a notice must never stop the command the user ran
        return None
    if not waiting:
        return None
    first = waiting[0]
    more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
    return (f"{first.requested_by_name} asks to {describe(first)}{more}: "
            f"answer with `helpline requests approve {first.id[:8]}` or `helpline requests refuse {first.id[:8]}`.")


def requests(
    answer: Annotated[Answer | None, typer.Argument(metavar="ANSWER", help="approve or refuse a waiting request (leave out to list them).")] = None,
    request_id: Annotated[str | None, typer.Argument(metavar="ID", help="The request's id, or its start as `helpline requests` shows it.")] = None,
    json_out: JsonOpt = False,
    follow: Annotated[bool, typer.Option("--follow", help="Keep watching: print each request as it arrives, until SIGTERM or Ctrl-C (the user-session service runs this).")] = False,
) -> None:
    """See the engineers' requests that wait for your answer on this PC, and approve or refuse one.

    A restore or fresh diagnostics an engineer asks for runs only once you approve it; unanswered, it expires.

    Examples:
      helpline requests
      helpline requests approve 3f2c9a1e
      helpline requests refuse 3f2c9a1e
      helpline requests --follow
    """
    if follow:
        if answer is not None:
            raise InvalidInputError("--follow watches for requests; it cannot answer one.",
                                    hint=f"helpline requests {answer.value} ID  (without --follow)")
        if json_out:
            raise InvalidInputError("--follow prints lines for people; it has no --json.",
                                    hint="helpline requests --json  lists the waiting requests once.")
        _follow()
        return
    if answer is None:
        if request_id is not None:
            raise InvalidInputError("Say what to do with the request first.",
                                    hint=f"helpline requests approve {request_id}  (or refuse)")
        _list(json_out)
        return
    if request_id is None:
        raise InvalidInputError(f"Which request do you {answer.value}?", hint="See their ids with `helpline requests`.")
    item = this_pc().answer_request(request_id, approve=answer is Answer.APPROVE)
    if json_out:
        output.print_json({"id": item.id, "answer": "approved" if answer is Answer.APPROVE else "refused"})
    elif answer is Answer.APPROVE:
        output.say(f"Approved: {output.esc(item.requested_by_name)} may {output.esc(describe(item))}. "
                   "It starts now; your engineer follows it.")
    else:
        output.say(f"Refused: nothing of it runs. {output.esc(item.requested_by_name)} is told.")


FOLLOW_SECONDS = 5.0


def _follow(*, every: float = FOLLOW_SECONDS) -> None:
    """Print each waiting request once, as it appears, until SIGTERM or Ctrl-C: the user-session part of the
    deployed agent, so a request never waits unseen for a user who runs no other `helpline` command."""
    import threading

    from agent.service.run import stop_on_signals

    stop = threading.Event()
    put_back = stop_on_signals(stop)
    shown: set[str] = set()
    try:
        output.say("Watching for engineers' requests on this PC; stops on SIGTERM or Ctrl-C.")
        while not stop.is_set():
            waiting = this_pc().waiting_requests()
            for item in waiting:
                if item.id in shown:
                    continue
                line = (f"{item.requested_by_name} asks to {describe(item)}: answer by "
                        f"{output.local_time(item.expires_at)} with `helpline requests approve {item.id[:8]}` "
                        f"or `helpline requests refuse {item.id[:8]}`.")
                output.say(output.esc(line))
                sys.stdout.flush()  # a journal or a pipe reads it now, not when a buffer fills
                _desktop_notice(line)
            shown = {item.id for item in waiting}  # an answered or expired request leaves; ids are never reused
            stop.wait(every)
    finally:
        put_back()


def _desktop_notice(text: str) -> None:
    """Show ``text`` as a desktop notification too, where the session has a display and notify-send; a
    missing or failing notifier is no error (the line is printed anyway)."""
    import os
    import shutil

    from agent.execute import run
    from protocol.untrusted import printable

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or shutil.which("notify-send") is None:
        return
    # notify-send reads a little markup in the body: names from the server are shown as text, never as markup.
    body = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    run(("notify-send", "--app-name=Helpline", "Helpline: an engineer's request waits for your answer", body),
        timeout=10)


def _list(json_out: bool) -> None:
    waiting = this_pc().waiting_requests()
    if json_out:
        output.print_json([item.to_json() for item in waiting])
        return
    if not waiting:
        output.say("No request waits for your answer on this PC.")
        return
    for item in waiting:
        ticket = f" for {item.ticket}" if item.ticket else ""
        output.say(f"[bold]{item.id[:8]}[/] {output.esc(item.requested_by_name)} ({output.esc(item.requested_by)}){ticket} "
                   f"asks to {output.esc(describe(item))}. Answer by {output.local_time(item.expires_at)}.")
    output.say("Approve with `helpline requests approve ID`, or refuse with `helpline requests refuse ID`.")
