"""`helpline share` without the people part: collect, redact, bundle, pack.

The CLI asks the questions, shows the preview and sends; this module does the
work, and never prints.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent import link
from agent.bundle import BundleResult, build_bundle
from agent.config import load_agent_config
from agent.diagnostics import CollectionReport, CollectOptions, collect
from agent.redaction import RedactionOptions, Redactor
from agent.store import AgentStore
from protocol.archive import pack
from protocol.bundle import REPORT_NAME
from protocol.errors import ConfigError
from protocol.schemas import AgentTicket
from protocol.tickets import parse_ticket_ref, ticket_label


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
    ticket: str | None = None  # known before bundling only when the PC shares to a ticket it is linked to

    def answers(self) -> dict[str, str]:
        return {"what_happened": self.what, "since_when": self.since, "already_tried": self.tried}


@dataclass
class PreparedBundle:
    work_dir: Path
    report: CollectionReport
    bundle: BundleResult
    archive: Path
    size: int
    sha256: str

    @property
    def report_html(self) -> Path:
        return self.bundle.out_dir / REPORT_NAME

    def discard(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def collect_options(request: ShareRequest) -> CollectOptions:
    """The admin's diagnostics settings plus what this run adds (logs, deadline, server)."""
    config = dict(load_agent_config().get("diagnostics", {}))
    config["log_globs"] = list(config.get("log_globs", [])) + list(request.logs)
    if request.deadline is not None:
        config["deadline"] = request.deadline
        config["collector_timeout"] = min(float(config.get("collector_timeout", 10.0)), request.deadline)
    if request.server_url:
        config["server_url"] = request.server_url
    return CollectOptions.from_config(config)


def redactor_for(request: ShareRequest) -> Redactor:
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
    return extra


def prepare(request: ShareRequest, *, progress: Callable[[str, str], None] | None = None,
            work_root: Path | None = None) -> PreparedBundle:
    """Collect, redact and bundle into a private work directory; return the packed bundle."""
    root = work_root or AgentStore().folder("work")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = Path(tempfile.mkdtemp(prefix="share-", dir=root))
    try:
        redactor = redactor_for(request)  # one pseudonym map for what collectors derive and for the bundle
        report = collect(collect_options(request), work / "staging", progress=progress, redactor=redactor)
        bundle = build_bundle(report, work / "staging", work / "bundle", redactor=redactor,
                              exclude=set(request.exclude), extra=_extra(request))
        shutil.rmtree(work / "staging", ignore_errors=True)  # unredacted: gone as soon as it is not needed
        archive = work / "bundle.tar.gz"
        size, sha256 = pack(work / "bundle", archive)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return PreparedBundle(work, report, bundle, archive, size, sha256)


@dataclass(frozen=True)
class TicketChoice:
    """The ticket a bundle goes to; ``ticket`` and ``response_minutes`` when the server was asked on the way."""

    number: str
    ticket: AgentTicket | None = None
    response_minutes: float | None = None


DEFAULT_TITLE = "Diagnostics from my PC"


def linked_ticket(reference: str, *, directory: Path | None = None) -> str:
    """The label of the ticket ``reference`` names, if this PC is linked to it; ConfigError otherwise."""
    wanted = ticket_label(parse_ticket_ref(reference))
    if wanted not in AgentStore(directory).require().tickets:
        raise ConfigError(f"This PC is not linked to {wanted}.", hint="Pair with the code your engineer gives you: --code CODE.")
    return wanted


def choose_ticket(request: ShareRequest, *, code: str | None = None, ticket: str | None = None,
                  server_url: str | None = None, directory: Path | None = None) -> TicketChoice:
    """The ticket a bundle goes to: the one behind a pairing ``code``, a linked ``ticket``, or a new self-service one.

    A ticket this PC is already linked to needs no server round trip, so a bundle
    for it can be queued while the server is unreachable. A new ticket takes
    its title and description from the user's answers.
    """
    if code:
        _, paired = link.pair(code, server_url=server_url, directory=directory)
        return TicketChoice(paired.number, paired)
    if ticket:
        return TicketChoice(linked_ticket(ticket, directory=directory))
    title = (request.what or DEFAULT_TITLE).splitlines()[0][:120] or DEFAULT_TITLE
    description = "\n".join(f"{label}: {value}" for label, value in (
        ("What happened", request.what), ("Since when", request.since), ("Already tried", request.tried)) if value)
    _, answer = link.request_help(title, description=description, server_url=server_url, directory=directory)
    return TicketChoice(answer.ticket.number, answer.ticket, float(answer.response_minutes))
