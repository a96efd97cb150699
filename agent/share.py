"""`helpline share` without the people part: collect, redact, bundle, pack.

The CLI asks the questions, shows the preview and sends; this module does the
work, and never prints. Light to import: the collectors, the redactor and the
bundling code load when :func:`prepare` runs, which a share does in a gathering
process of its own (:mod:`agent.gathering`).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from agent.bundle.result import BundleResult
from agent.store import AgentStore
from protocol.bundle import REPORT_NAME
from protocol.errors import ConfigError, ConflictError, InvalidInputError, UnavailableError
from protocol.tickets import parse_ticket_ref, ticket_label

if TYPE_CHECKING:  # the server's client and its models load only when a share goes to a ticket
    from agent import link
    from agent.diagnostics import CollectionReport, CollectOptions
    from agent.diagnostics.cpu_sample import CpuSample
    from agent.redaction import Redactor
    from protocol.schemas import AgentTicket


@dataclass
class ShareRequest:
    """What the user asked for on the command line and in answers to the three questions."""

    what: str = ""
    since: str = ""
    tried: str = ""
    exclude: set[str] = field(default_factory=set)
    logs: list[str] = field(default_factory=list)
    deadline: float | None = None
    redact_network: bool = False
    redact_names: bool = False
    server_url: str | None = None
    ticket: str | None = None  # known before bundling when the share goes to a ticket the PC is linked to
    ticket_title: str | None = None
    new_ticket: bool = False  # the share opens a new ticket when it is sent

    def answers(self) -> dict[str, str]:
        return {"what_happened": self.what, "since_when": self.since, "already_tried": self.tried}

    def to_dict(self) -> dict:
        """The request as plain JSON data (:meth:`from_dict` reads it back): how it reaches a gathering process."""
        return {**asdict(self), "exclude": sorted(self.exclude)}

    @classmethod
    def from_dict(cls, data: dict) -> ShareRequest:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["exclude"] = set(values.get("exclude", ()))
        return cls(**values)


class Joinable(Protocol):
    """What removes a work folder in the background: a thread, or the process that made the bundle."""

    def join(self, timeout: float | None = None) -> None: ...


@dataclass
class PreparedBundle:
    work_dir: Path
    report: CollectionReport | None  # None when the bundle was made in a gathering process
    bundle: BundleResult
    archive: Path
    size: int
    sha256: str
    #: Removes the unredacted staging directory (then, once asked, the whole work directory) in the background.
    removal: Joinable | None = None

    @property
    def report_html(self) -> Path:
        return self.bundle.out_dir / REPORT_NAME

    def discard(self) -> None:
        """Remove the work directory (the bundle folder and what is left of the archive), waiting for it."""
        if self.removal is not None:
            self.removal.join()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def keep(self) -> None:
        """Keep the work folder for the person to read (a preview): later shares leave it :data:`KEPT_SECONDS`."""
        if self.removal is not None:
            self.removal.join()  # the unredacted staging is gone before the folder is kept
        (self.work_dir / KEPT_MARKER).touch()

    def discard_in_background(self) -> None:
        """Start removing the work directory once the archive is elsewhere (the outbox): it goes while the
        bundle is sent. :meth:`discard` waits for it."""
        self.removal = _remove_in_background(self.work_dir, after=self.removal)


def _remove_in_background(directory: Path, *, after: Joinable | None = None) -> threading.Thread:
    """Start removing ``directory`` on a thread of its own (after the thread ``after``); the interpreter
    waits for it before it exits.

    Removing a few dozen folders takes a tenth of a second on some file systems: time
    the share can spend packing and sending instead of waiting.
    """
    def remove() -> None:
        if after is not None:
            after.join()
        shutil.rmtree(directory, ignore_errors=True)

    thread = threading.Thread(target=remove, name=f"remove-{directory.name}", daemon=False)
    start_deaf_to_ctrl_c(thread)
    return thread


def start_deaf_to_ctrl_c(thread: threading.Thread) -> None:
    """Start ``thread`` with Ctrl-C (SIGINT) blocked from its first instruction on.

    The kernel gives a process's signal to any thread that does not block it; one
    taken by a helper thread leaves the main thread blocked on the terminal, waiting
    for a line, and the person's Ctrl-C does nothing. A thread inherits its creator's
    mask, so the mask is set around its start, not by the thread itself (which may not
    run for a while on a busy PC): a Ctrl-C in between waits, pending, for the main thread.
    """
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


#: Work folders are named ``share-<pid>-<random>``: the process that made one can be told after it is gone.
WORK_PREFIX = "share-"
#: The marker of a work folder kept on purpose (a preview the person was told to read).
KEPT_MARKER = ".kept"
#: Seconds a kept work folder stays once its share has ended: then the next share removes it.
KEPT_SECONDS = 7 * 24 * 3600.0
#: Seconds a work folder whose name names no process (an older Helpline's) stays before it counts as stale.
UNOWNED_SECONDS = 3600.0


def new_work_folder(work_root: Path | None = None) -> Path:
    """A new private work folder for one share, after removing the stale ones beside it (:func:`sweep_work`)."""
    from agent.leftovers import owned_name

    root = work_root or AgentStore().folder("work")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    sweep_work(root)
    return Path(tempfile.mkdtemp(prefix=owned_name(WORK_PREFIX), dir=root))


def sweep_work(root: Path, *, now: float | None = None) -> list[Path]:
    """Start removing the work folders in ``root`` that no share will finish; the folders whose removal began.

    A share that crashed, was killed, or was stopped while a collector did not let go
    leaves its folder, and with it the unredacted ``staging/``. A folder is stale once
    the process named in it is gone (or, for a name without one, an hour after it was
    last changed; see :func:`agent.leftovers.stale_folders`). A kept folder (a preview)
    stays :data:`KEPT_SECONDS` after it was kept; only its ``staging/``, which should
    not be there, goes at once. A folder of a running share, this process's included,
    is never touched.
    """
    from agent.leftovers import stale_folders

    now = time.time() if now is None else now
    removing: list[Path] = []
    for folder in stale_folders(root, WORK_PREFIX, unowned_seconds=UNOWNED_SECONDS, now=now):
        try:
            kept_at = (folder / KEPT_MARKER).stat().st_mtime
        except OSError:
            kept_at = None
        if kept_at is not None and now - kept_at < KEPT_SECONDS:
            if (folder / "staging").exists():
                removing.append(folder / "staging")
            continue
        removing.append(folder)
    for folder in removing:
        _remove_in_background(folder)
    return removing


def exclusions(values: Iterable[str]) -> set[str]:
    """The categories (or collectors) ``--exclude`` names, as people write them: any case, several in one value
    separated by commas or spaces. An unknown name is refused before anything is gathered (InvalidInputError)."""
    wanted = {name.lower() for value in values for name in re.split(r"[,\s]+", value) if name}
    if not wanted:
        return set()  # (the common case loads no collector)
    from agent.diagnostics.collectors import collector_names

    known = collector_names()
    unknown = sorted(wanted - known)
    if unknown:
        raise InvalidInputError(f"Nothing to leave out is called {', '.join(unknown)}.",
                                hint=f"Choose from {', '.join(sorted(known))}.")
    return wanted


def unmatched_logs(patterns: Iterable[str], *, home: Path | None = None) -> list[str]:
    """The ``--logs`` patterns no file matches now (``~`` is the home folder), in the order given: a typo the
    person hears of before gathering, not after. The files are found as the logs collector finds them."""
    patterns = list(patterns)
    if not patterns:
        return []  # (the common case loads no collector)
    from agent.diagnostics.collectors.logs import log_glob_files

    return [pattern for pattern in patterns if next(log_glob_files(pattern, home or Path.home()), None) is None]


def collect_options(request: ShareRequest) -> CollectOptions:
    """The admin's diagnostics settings plus what this run adds (logs, deadline, server, what it leaves out)."""
    from agent.config import load_agent_config
    from agent.diagnostics import CollectOptions

    config = dict(load_agent_config().get("diagnostics", {}))
    config["log_globs"] = list(config.get("log_globs", [])) + list(request.logs)
    from agent.group_policy import GroupPolicy

    group = GroupPolicy().body()  # the group policy's collectors and log globs add to the admin's agent.toml
    if group is not None and group.collectors is not None:
        config["log_globs"] += list(group.collectors.extra_log_globs or [])
        config["exclude"] = sorted({*config.get("exclude", []), *(group.collectors.disabled or [])})
    if request.exclude:  # left out of the bundle, and not gathered either
        config["exclude"] = sorted({*config.get("exclude", []), *request.exclude})
    if request.deadline is not None:
        config["deadline"] = request.deadline
        config["collector_timeout"] = min(float(config.get("collector_timeout", 10.0)), request.deadline)
    if request.server_url:
        config["server_url"] = request.server_url
    return CollectOptions.from_config(config)


def redactor_for(request: ShareRequest) -> Redactor:
    from agent.redaction import RedactionOptions, Redactor

    keep = (urlsplit(request.server_url).hostname,) if request.server_url else ()
    return Redactor(RedactionOptions(
        network=request.redact_network,
        hostnames=request.redact_names,
        usernames=request.redact_names,
        known_hostnames=(socket.gethostname(),),
        known_usernames=(getpass.getuser(),),
        keep_hosts=tuple(h for h in keep if h),
    ))


def _extra(request: ShareRequest) -> dict:
    extra: dict = {"answers": request.answers()}
    if request.ticket:
        extra["ticket"] = request.ticket
        if request.ticket_title:
            extra["ticket_title"] = request.ticket_title
    elif request.new_ticket:
        extra["new_ticket"] = True
    return extra


def prepare(request: ShareRequest, *, progress: Callable[[str, str], None] | None = None,
            work_root: Path | None = None, cpu_sample: CpuSample | None = None,
            settle: Callable[[ShareRequest], None] | None = None,
            cancelled: threading.Event | None = None, work: Path | None = None) -> PreparedBundle:
    """Collect, redact and bundle into a private work directory; return the packed bundle.

    ``cpu_sample`` is the first CPU reading if the caller took one when the share began.
    ``settle(request)`` is called once the collectors are done, before the bundle is
    finished: what the bundle says of the ticket and the person's answers may be
    settled while the collectors work (:class:`Gathering`). Once ``cancelled`` is set
    the collection stops (CollectionCancelled) and the work directory is removed.
    ``work`` is a folder :func:`new_work_folder` made (default: a new one in ``work_root``).
    """
    from agent.bundle.build import BundleBuilder
    from agent.diagnostics import collect  # (through the package: the name is also its module's)
    from protocol.archive import pack

    work = work or new_work_folder(work_root)
    removal: threading.Thread | None = None
    try:
        redactor = redactor_for(request)  # one pseudonym map for what collectors derive and for the bundle
        # Files of collectors that are done are scrubbed while the slower ones still work.
        builder = BundleBuilder(work / "staging", work / "bundle", redactor=redactor, exclude=set(request.exclude))
        report = collect(collect_options(request), work / "staging", progress=progress, redactor=redactor,
                         cpu_sample=cpu_sample, on_result=builder.scrub_early, cancelled=cancelled)
        if settle is not None:
            settle(request)
        bundle = builder.finish(report, extra=_extra(request))
        removal = _remove_in_background(work / "staging")  # unredacted: gone as soon as it is not needed
        archive = work / "bundle.tar.gz"
        size, sha256 = pack(work / "bundle", archive)
    except BaseException:
        if removal is not None:
            removal.join()
        shutil.rmtree(work, ignore_errors=True)
        raise
    return PreparedBundle(work, report, bundle, archive, size, sha256, removal)


#: The name a bundle gets when --output names a folder: no host or user name (the file may travel further).
OUTPUT_NAME = "helpline-diagnostics-{moment}.tar.gz"


def output_target(path: str | Path, *, overwrite: bool = False, now: datetime | None = None) -> Path:
    """The file a bundle saved with ``--output path`` goes to, checked before anything is gathered.

    A folder (or a path ending in a separator) gets a new file named after the
    moment (:data:`OUTPUT_NAME`). An existing file is replaced only with
    ``overwrite``; anything else that exists there, a missing or unwritable folder
    on the way, is refused (InvalidInputError). Folders that do not exist yet are
    made when the bundle is saved.
    """
    if not str(path).strip():
        raise InvalidInputError("--output needs a file or folder name.", hint="For example: --output ~/diagnostics.tar.gz")
    target = Path(path).expanduser()
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        moment = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        folder, target = target, target / OUTPUT_NAME.format(moment=moment)
        for again in range(2, 100):  # two shares within the same second: the second is numbered
            if not (target.exists() or target.is_symlink()):
                break
            target = folder / OUTPUT_NAME.format(moment=f"{moment}-{again}")
    if target.exists() or target.is_symlink():
        if not target.is_file() or target.is_symlink():
            raise InvalidInputError(f"{target} is not a regular file; the bundle is not written over it.",
                                    hint="Give the name of a new file, or of a folder to save it in.")
        if not overwrite:
            raise InvalidInputError(f"{target} already exists.", hint="Give another name, or add --overwrite to replace it.")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InvalidInputError(f"Cannot save to {target}: {folder} is not a folder.", hint="Give another place to save it.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInputError(f"Cannot save to {target}: you may not write in {folder}.", hint="Give another place to save it.")
    return target


def save_archive(archive: Path, target: Path, *, overwrite: bool = False) -> None:
    """Move the packed bundle to ``target`` whole or not at all: a part file beside it, renamed at the end.

    Without ``overwrite`` a file that appeared there meanwhile is kept (InvalidInputError). An
    error of the file system (no space, read-only, not permitted) is one InvalidInputError line.
    """
    part = target.parent / f".{target.name}.{os.getpid()}.part"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(archive), part)
        if overwrite:
            os.replace(part, target)
            return
        try:
            os.link(part, target)  # fails if the name is taken: never replaces a file
        except FileExistsError:
            raise InvalidInputError(f"{target} already exists.",
                                    hint="Give another name, or add --overwrite to replace it.") from None
        except OSError:  # a file system without hard links (FAT, exFAT): check, then rename
            if target.exists():
                raise InvalidInputError(f"{target} already exists.",
                                        hint="Give another name, or add --overwrite to replace it.") from None
            os.replace(part, target)
    except OSError as exc:
        raise InvalidInputError(f"Could not save the bundle to {target}: {exc.strerror or exc}.",
                                hint="Give another place to save it.") from None
    finally:
        part.unlink(missing_ok=True)


@dataclass(frozen=True)
class TicketChoice:
    """The ticket a bundle goes to; ``number`` None until a new ticket is opened for it.

    ``ticket`` is the ticket as the server had it when chosen (None if it could
    not be asked), ``response_minutes`` the promise when the ticket was just opened.
    """

    number: str | None
    ticket: AgentTicket | None = None
    response_minutes: float | None = None

    @property
    def is_new(self) -> bool:
        return self.number is None


DEFAULT_TITLE = "Diagnostics from my PC"


def linked_ticket(reference: str, *, directory: Path | None = None) -> str:
    """The label of the ticket ``reference`` names, if this PC is linked to it; ConfigError otherwise."""
    wanted = ticket_label(parse_ticket_ref(reference))
    if wanted not in AgentStore(directory).require().tickets:
        raise ConfigError(f"This PC is not linked to {wanted}.", hint="Pair with the code your engineer gives you: --code CODE.")
    return wanted


def choose_ticket(*, code: str | None = None, ticket: str | None = None, new: bool = False,
                  server_url: str | None = None, directory: Path | None = None,
                  choose: link.ChooseTicket | None = None) -> TicketChoice:
    """Which ticket a share goes to, decided before gathering so the question and the report can name it.

    The ticket behind a pairing ``code`` (the PC is paired now), a linked
    ``ticket``, or the one open ticket this PC is linked to (``choose`` picks
    among several: :func:`agent.link.ticket_in_use`). A new ticket (``number``
    None, opened by :func:`open_ticket` once the user agrees) only when asked
    (``new``) or when no linked ticket is open. A named linked ticket needs no
    server: a bundle for it can be queued while the server is unreachable.
    """
    from agent import link
    from protocol.schemas import TicketStatus

    if code:
        _, paired = link.pair(code, server_url=server_url, directory=directory)
        return TicketChoice(paired.number, paired)
    if ticket:
        number = linked_ticket(ticket, directory=directory)
        try:
            current = link.my_tickets(directory, number)[0]
        except UnavailableError:
            return TicketChoice(number)
        if current.status == TicketStatus.CLOSED:  # say so before gathering, not after
            raise ConflictError(f"{number} is closed; it takes no more diagnostics.",
                                hint="Share to a new ticket with --new, or ask your support team to reopen it.")
        return TicketChoice(number, current)
    if new or AgentStore(directory).load() is None:  # a PC new to Helpline can only open a ticket
        return TicketChoice(None)
    current = link.ticket_in_use(directory, choose=choose)
    return TicketChoice(current.number, current) if current is not None else TicketChoice(None)


def open_ticket(request: ShareRequest, *, server_url: str | None = None, directory: Path | None = None) -> TicketChoice:
    """Open a new self-service ticket for a share, titled and described from the user's answers."""
    from agent import link

    title, description = ticket_text(request)
    _, answer = link.request_help(title, description=description, server_url=server_url, directory=directory)
    return TicketChoice(answer.ticket.number, answer.ticket, float(answer.response_minutes))


def ticket_text(request: ShareRequest) -> tuple[str, str]:
    """The title and description of a ticket a share opens, from the user's answers."""
    title = (request.what or DEFAULT_TITLE).splitlines()[0][:120] or DEFAULT_TITLE
    description = "\n".join(f"{label}: {value}" for label, value in (
        ("What happened", request.what), ("Since when", request.since), ("Already tried", request.tried)) if value)
    return title, description
