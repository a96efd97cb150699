"""`helpline diag`: engineers fetch, read and compare diagnostics bundles."""

from __future__ import annotations

import re
import tempfile
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from cli import credentials, output
from cli.commands.engineer import JsonOpt
from agent.client import HelplineClient
from protocol.bundle import REPORT_NAME
from protocol.identifiers import MIN_PREFIX, id_prefix
from protocol.errors import InvalidInputError, NotFoundError
from protocol.schemas import BundlePublic
from protocol.tickets import parse_ticket_ref, ticket_label
from protocol.untrusted import contained, safe_component

diag_app = typer.Typer(help="Diagnostics bundles: download, read and compare them.", no_args_is_help=True)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _resolve(client: HelplineClient, ref: str) -> BundlePublic:
    """A bundle id or a unique start of it (as tables show it), or a ticket reference meaning that ticket's newest bundle.

    Digits alone (``1042``) name a ticket; anything else that can start an id is looked up as one.
    """
    if _UUID.match(ref.strip().lower()):
        return client.bundle(ref.strip().lower())
    try:
        number = parse_ticket_ref(ref)
    except InvalidInputError as exc:
        if id_prefix(ref) is None:
            raise InvalidInputError(exc.message, hint=f"Give a ticket like T-1042, or at least {MIN_PREFIX} characters of a bundle id.") from None
        return client.bundle(id_prefix(ref))
    bundles = client.ticket_bundles(number)
    if not bundles:
        raise NotFoundError(f"{ticket_label(number)} has no diagnostics yet.", hint="Ask the user to run `helpline share`.")
    return bundles[-1]


def _default_dir(bundle: BundlePublic) -> Path:
    """``./T-…-HOST-TIME`` for a bundle: the ticket and hostname come from a PC or the server,
    so each becomes one safe path component and the result must stay inside the current folder."""
    when = f"{bundle.created_at:%Y%m%d-%H%M%S}"
    ticket = safe_component(bundle.ticket, fallback="ticket", max_bytes=40)
    host = safe_component(bundle.hostname, fallback="pc", max_bytes=80)
    here = Path.cwd()
    return contained(here, safe_component(f"{ticket}-{host}-{when}", fallback=f"bundle-{when}"))


def _download(client: HelplineClient, bundle: BundlePublic, dest: Path) -> Path:
    from protocol.archive import safe_extract

    with tempfile.TemporaryDirectory(prefix="helpline-diag-") as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        client.download_bundle(bundle.id, archive)
        safe_extract(archive, dest)
    return dest


@diag_app.command("get")
def get(
    ref: Annotated[str, typer.Argument(metavar="BUNDLE", help="A bundle id (or its start, as tables show it), or a ticket number for its newest bundle.")],
    directory: Annotated[Path | None, typer.Option("--dir", "-d", metavar="DIR", help="Where to unpack it (default: ./T-…-HOST-TIME).")] = None,
    open_report: Annotated[bool, typer.Option("--open", help="Open report.html in the browser.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Download a bundle, check it and unpack it safely.

    Example: helpline diag get T-1042 --open
    """
    with credentials.connect() as client:
        bundle = _resolve(client, ref)
        dest = directory or _default_dir(bundle)
        _download(client, bundle, dest)
    report = dest / REPORT_NAME
    if json_out:
        output.print_json({"bundle": bundle, "dir": str(dest), "report": str(report)})
    else:
        output.say(f"Bundle {bundle.id} of {bundle.ticket} from {output.esc(bundle.hostname)} is in {output.esc(dest)}")
        output.say(f"Read it: {output.esc(report)}")
    if open_report:
        webbrowser.open(report.resolve().as_uri())


@diag_app.command("show")
def show(ref: Annotated[str, typer.Argument(metavar="BUNDLE", help="A bundle id, or a ticket number for its newest bundle.")], json_out: JsonOpt = False) -> None:
    """Show a bundle's triage summary without downloading it.

    Example: helpline diag show T-1042
    """
    from agent.bundle.summary import attention_lines

    with credentials.connect() as client:
        detail = client.bundle(_resolve(client, ref).id)
    if json_out:
        output.print_json(detail)
        return
    os_info = detail.summary.get("os") or {}
    output.say(f"[bold]{detail.ticket}[/] bundle {detail.id} from {output.esc(detail.hostname)}, {output.local_time(detail.created_at)}, "
               f"{detail.files} files, {output.size(detail.size)}")
    output.say(output.esc(f"OS: {os_info.get('name') or '—'} {os_info.get('version') or ''} (kernel {os_info.get('kernel') or '—'})"))
    lines = attention_lines(detail.summary)
    output.say("\n".join(f"• {output.esc(line)}" for line in lines) if lines else "Nothing needs attention.")


@diag_app.command("diff")
def diff(
    older: Annotated[str, typer.Argument(metavar="OLDER", help="The earlier bundle: id, ticket number, or a local .tar.gz or directory.")],
    newer: Annotated[str, typer.Argument(metavar="NEWER", help="The later bundle, the same ways.")],
    json_out: JsonOpt = False,
) -> None:
    """Show what changed between two bundles of the same PC: packages, services, disks, errors.

    Example: helpline diag diff 3f2c…(yesterday) T-1042
    """
    from agent.bundle.diff import diff_bundles

    with tempfile.TemporaryDirectory(prefix="helpline-diff-") as tmp:
        paths = []
        client = None
        try:
            for i, ref in enumerate((older, newer)):
                local = Path(ref).expanduser()
                if local.exists():
                    paths.append(local)
                    continue
                if client is None:
                    client = credentials.connect()
                bundle = _resolve(client, ref)
                archive = Path(tmp) / f"{i}.tar.gz"
                client.download_bundle(bundle.id, archive)
                paths.append(archive)
        finally:
            if client is not None:
                client.close()
        if paths[0].resolve() == paths[1].resolve():
            raise InvalidInputError("Both sides are the same bundle.")
        result = diff_bundles(paths[0], paths[1])
    if json_out:
        output.print_json(result.to_dict())
        return
    output.say(output.esc("\n".join(result.render_text())))
