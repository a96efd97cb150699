"""Commands for the person at the PC about their snapshots: take one now, list them, how protected, restore."""

from __future__ import annotations

import functools
import os
import re
import sys
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from agent.local import this_pc
from cli import output
from cli.commands.user import JsonOpt, interactive
from protocol.errors import ExitStatus, InvalidInputError
from protocol.times import parse_moment

snapshot_app = typer.Typer(help="Snapshots of your files on this PC: take one now, list them, see how protected "
                                "you are. Bring files back with `helpline restore`.", no_args_is_help=True)


class RepositoryName(str, Enum):
    LOCAL = "local"
    SERVER = "server"


RepositoryOpt = Annotated[RepositoryName | None, typer.Option(
    "--repository", help="Which snapshots: local (on this PC) or server (on the Helpline server). "
                         "Default: every one the policy keeps (now), or local (list, restore).")]


def _progress_bar():
    from rich.progress import (
        BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=output.err_console(), transient=True)


@snapshot_app.command("now")
def snapshot_now(repository: RepositoryOpt = None, json_out: JsonOpt = False) -> None:
    """Take a snapshot of your files now, whatever the schedule says (a progress bar on a terminal).

    Exits 11 when a snapshot was made without some files it could not read (they are named).

    Example: helpline snapshot now
    """
    snapshots = this_pc().snapshots()
    names = (repository.value,) if repository else None
    if sys.stderr.isatty() and not json_out:
        with _progress_bar() as bar:
            tasks: dict[str, int] = {}

            def show(name: str, progress) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(f"Snapshot ({name})", total=progress.total_bytes or None)
                bar.update(tasks[name], completed=progress.bytes_done, total=progress.total_bytes or None)

            runs = snapshots.run_snapshot(repositories=names, on_progress=show)
    else:
        runs = snapshots.run_snapshot(repositories=names)
    if json_out:
        output.print_json([{
            "repository": run.repository, "status": run.status, "snapshot_id": run.snapshot_id,
            "started_at": run.started_at, "finished_at": run.finished_at,
            "files_new": run.summary.files_new if run.summary else 0,
            "files_changed": run.summary.files_changed if run.summary else 0,
            "bytes_added": run.summary.data_added if run.summary else 0,
            "warnings": list(run.warnings), "error": run.error} for run in runs])
    failed = [run for run in runs if run.status == "failed"]
    for run in runs:
        if json_out or run.status == "failed":
            continue
        summary = run.summary
        output.say(f"Snapshot [bold]{run.snapshot_id}[/] in the {run.repository} repository: "
                   f"{summary.files_new} new and {summary.files_changed} changed files, "
                   f"{output.size(summary.data_added)} added ({output.span(summary.total_duration)}).")
        for warning in run.warnings[:1]:
            output.error(warning, "Those files are not in the snapshot; close the programs that hold them, or "
                                  "check their permissions.")
    if failed:
        for run in failed[:-1]:
            output.error(f"The snapshot into the {run.repository} repository failed: {run.error}")
        last = failed[-1]
        if last.exception is not None and len(failed) == len(runs):
            raise last.exception
        output.error(f"The snapshot into the {last.repository} repository failed: {last.error}")
        raise typer.Exit(ExitStatus.PARTIAL)
    if any(run.status == "partial" for run in runs):
        raise typer.Exit(ExitStatus.PARTIAL)


@snapshot_app.command("list")
def snapshot_list(repository: RepositoryOpt = None, json_out: JsonOpt = False) -> None:
    """List this PC's snapshots, oldest first, with their time (day and zone) and what they hold.

    Example: helpline snapshot list --json
    """
    name = repository.value if repository else "local"
    found = this_pc().snapshots().list_snapshots(name)
    if json_out:
        output.print_json([{"id": s.id, "short_id": s.short_id, "time": s.time, "hostname": s.hostname,
                            "paths": list(s.paths), "tags": list(s.tags)} for s in found])
        return
    if not found:
        output.say(f"No snapshots of this PC in the {name} repository yet. Take one: helpline snapshot now")
        return
    output.table(f"Snapshots in the {name} repository", ["ID", "Time", "Paths"],
                 [(s.short_id, output.full_time(s.time), ", ".join(s.paths)) for s in found])


@snapshot_app.command("status")
def snapshot_status(json_out: JsonOpt = False) -> None:
    """Say how protected your files are: when the last snapshot that holds them was made and the last restore was proven.

    Where the agent service keeps this PC's snapshots, you are told about your own home; root is told about the PC.

    Example: helpline snapshot status
    """
    snapshots = this_pc().snapshots()
    found = snapshots.protection()
    if json_out:
        output.print_json({"state": found.state, "words": found.words, "last_snapshot_at": found.last_snapshot_at,
                           "last_snapshot_id": found.last_snapshot_id, "last_verified_at": found.last_verified_at,
                           "last_failure_at": found.last_failure_at, "last_error": found.last_error})
        return
    output.say(found.words)
    if found.last_snapshot_at is not None:
        output.say(f"Last snapshot {found.last_snapshot_id}: {output.full_time(found.last_snapshot_at)}.")


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """Read ``--at`` (see :func:`protocol.times.parse_moment`): a date and time, a date (its end), a time of
    day, yesterday, or how long ago (``3h``, ``2 days``)."""
    return parse_moment(text, now=now)


def restore(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="The file or folder to bring back, as it was named.")],
    at: Annotated[str | None, typer.Option("--at", metavar="TIME",
                                           help="From the last snapshot at or before this time: 2026-12-01 14:00, "
                                                "2026-12-01 (its end), 14:00, yesterday, or how long ago: "
                                                "3h, 2 days.")] = None,
    snapshot: Annotated[str | None, typer.Option("--snapshot", metavar="ID",
                                                 help="From this snapshot (an id from `helpline snapshot list`).")] = None,
    to: Annotated[Path | None, typer.Option("--to", metavar="DIR",
                                            help="Put it into this folder instead of beside the original.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Put it back in its place; what is there now is kept "
                                                                "as NAME.replaced-DATE. Asks first.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before --overwrite (for scripts).")] = False,
    repository: RepositoryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Bring a file or folder back from a snapshot; nothing is ever overwritten without asking.

    By default it comes back beside the original as NAME.restored-YYYYMMDD-HHMM.

    Example: helpline restore ~/Documents/report.odt --at "2026-12-01 14:00"
    """
    if at is not None and snapshot is not None:
        raise InvalidInputError("Give --at or --snapshot, not both.")
    when = parse_when(at) if at is not None else None
    snapshots = this_pc().snapshots()
    name = repository.value if repository else "local"
    if overwrite and not yes:
        if not interactive():
            raise InvalidInputError("--overwrite asks first, and there is nobody at a terminal to answer.",
                                    hint="Add --yes to overwrite without asking, or restore beside the original.")
        repo = snapshots.repository(name, purpose="restore")
        chosen = snapshots.find_snapshot(repo, os.path.abspath(os.path.expanduser(str(path))), snapshot=snapshot,
                                         at=when)
        snapshot = chosen.id  # the one shown is the one restored
        output.say(f"This replaces {output.esc(path)} with its copy from snapshot {chosen.short_id} "
                   f"({output.full_time(chosen.time)}); what is there now is kept beside it as "
                   f"{output.esc(Path(path).name)}.replaced-….")
        if not typer.confirm("Replace it?", default=False, err=True):
            output.say("Nothing was changed.")
            raise typer.Exit(ExitStatus.OK)
    restore = functools.partial(snapshots.restore, path, snapshot=snapshot, at=when, to=to, overwrite=overwrite,
                                repository=name)
    if sys.stderr.isatty() and not json_out:
        # A bar from the start: it runs (elapsed time) while restic says nothing, and fills where restic reports
        # its progress (0.17 and newer; 0.14 restores without a word until it is done).
        with _progress_bar() as bar:
            task = bar.add_task(f"Restoring {output.esc(Path(path).name)}", total=None)
            done = restore(on_progress=lambda progress: bar.update(task, completed=progress.bytes_done,
                                                                   total=progress.total_bytes or None))
    else:
        done = restore()
    if json_out:
        output.print_json({"snapshot_id": done.snapshot.id, "snapshot_time": done.snapshot.time, "path": done.path,
                           "placed_at": str(done.placed_at), "kept_at": str(done.kept_at) if done.kept_at else None})
        return
    output.say(f"Restored {output.esc(done.path)} from snapshot {done.snapshot.short_id} "
               f"({output.full_time(done.snapshot.time)}) to [bold]{output.esc(done.placed_at)}[/].")
    if done.kept_at is not None:
        output.say(f"What was there before is kept as {output.esc(done.kept_at)}.")


def _local_socket(store, snapshots):
    """The service's local socket for the users' commands: served where HELPLINE_AGENT_SOCKET names, or at the
    default place when running as root on the PC's own state (no HELPLINE_AGENT_DIR: the installed service); a
    user's own agent, and a test's, keep their identity to themselves."""
    from agent.service.localapi import open_local_socket
    from agent.service.wire import SOCKET_ENV, is_installed_service, socket_path

    if os.environ.get(SOCKET_ENV) is None and not is_installed_service():
        return None
    path = socket_path()
    server = open_local_socket(store, path, snapshots=snapshots)
    output.say(f"Serving this PC's users on {output.esc(path)}.")
    return server


def run_service(*, once: bool) -> None:
    """`helpline agent run`: the agent's loop in this process, printing one line per thing it did."""
    import threading

    from agent.service.run import agent_service, stop_on_signals

    from agent.local import in_process_pc

    stop = threading.Event()
    from agent.service.homes import service_snapshots

    pc = in_process_pc()  # the service is the identity's owner: never a client of its own socket
    snapshots = service_snapshots(pc.store)  # installed: every user's home

    def show(event) -> None:
        line = f"{output.local_time(event.at)}  {event.what}"
        if event.ok:
            output.say(output.esc(line))
        else:
            output.error(line)

    service = agent_service(snapshots, stop=stop, on_event=show)
    put_back = stop_on_signals(stop)
    local = None
    try:
        if not once:
            local = _local_socket(pc.store, snapshots)
            output.say("The Helpline agent is running; it stops on SIGTERM or Ctrl-C.")
        service.serve(once=once)
    finally:
        put_back()
        if local is not None:
            local.stop()
    if stop.is_set() and not once:
        output.say("The Helpline agent stopped.")
