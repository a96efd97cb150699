"""`helpline diag`: engineers fetch, read and compare diagnostics bundles."""

from __future__ import annotations

import json
import re
import tempfile
import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import credentials, output
from cli.commands.engineer import JsonOpt
from agent.client import HelplineClient
from protocol.bundle import MANIFEST_NAME, REPORT_NAME, SUMMARY_NAME
from protocol.identifiers import MIN_PREFIX, id_prefix
from protocol.errors import InvalidInputError, NotFoundError
from protocol.schemas import BundlePublic
from protocol.tickets import parse_ticket_ref, ticket_label
from protocol.units import human_size
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
    try:
        bundles = client.ticket_bundles(number)
    except NotFoundError:
        if ref.strip().isdigit() and id_prefix(ref) is not None:  # no such ticket: digits may start a bundle id
            return client.bundle(id_prefix(ref))
        raise
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


#: Written beside an unpacked bundle: which bundle it is, so a later `diag get` can reuse the copy.
COPY_MARKER = ".helpline-bundle.json"


def _download(client: HelplineClient, bundle: BundlePublic, dest: Path) -> Path:
    from protocol.archive import safe_extract

    with tempfile.TemporaryDirectory(prefix="helpline-diag-") as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        client.download_bundle(bundle.id, archive)
        safe_extract(archive, dest)
    _write_marker(dest, bundle)
    return dest


def _write_marker(dest: Path, bundle: BundlePublic) -> None:
    """Record the bundle's id and archive hash, and the unpacked manifest's hash, beside the copy."""
    from protocol.archive import sha256_file

    _, manifest_sha = sha256_file(dest / MANIFEST_NAME)
    marker = {"bundle": bundle.id, "archive_sha256": bundle.sha256, "manifest_sha256": manifest_sha}
    (dest / COPY_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def verified_copy(dest: Path, bundle: BundlePublic) -> bool:
    """True when ``dest`` holds this very bundle, unpacked by `diag get` and unchanged since.

    The marker must name the bundle and its archive hash, the manifest must be the
    one unpacked, and summary.json, report.html and every raw file must still have
    the hashes the manifest gives; anything else (a different bundle, an edited or
    missing file) is not reused.
    """
    from protocol.archive import sha256_file

    try:
        marker = json.loads((dest / COPY_MARKER).read_text(encoding="utf-8"))
        if not isinstance(marker, dict) or marker.get("bundle") != bundle.id or \
                marker.get("archive_sha256") != bundle.sha256:
            return False
        if sha256_file(dest / MANIFEST_NAME)[1] != marker.get("manifest_sha256"):
            return False
        manifest = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        expected = {name: record.get("sha256") for name, record in (manifest.get("documents") or {}).items()}
        expected.update({item["file"]: item.get("sha256") for item in manifest.get("items") or [] if item.get("file")})
        if not expected.keys() >= {SUMMARY_NAME, REPORT_NAME}:
            return False
        for member, digest in expected.items():
            path = contained(dest, member)
            if path.is_symlink() or sha256_file(path)[1] != digest:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidInputError):
        return False
    return True


def _open_in_browser(report: Path) -> None:
    """Open the report in a browser, or say where it is when this PC has none to open it with."""
    try:
        opened = webbrowser.open(report.resolve().as_uri())
    except webbrowser.Error:
        opened = False
    if not opened:
        output.say(f"No browser could be started here; open {output.esc(report)} yourself.")


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
        # A copy this command unpacked before, unchanged since, is used again rather than refused.
        reused = dest.is_dir() and verified_copy(dest, bundle)
        if not reused:
            _download(client, bundle, dest)
    report = dest / REPORT_NAME
    if json_out:
        output.print_json({"bundle": bundle, "dir": str(dest), "report": str(report), "reused": reused})
    else:
        where = "was already in" if reused else "is in"
        output.say(f"Bundle {bundle.id} of {bundle.ticket} from {output.esc(bundle.hostname)} {where} {output.esc(dest)}"
                   + (" (checked: unchanged since it was downloaded)" if reused else ""))
        output.say(f"Read it: {output.esc(report)}")
    if open_report:
        _open_in_browser(report)


@diag_app.command("show")
def show(ref: Annotated[str, typer.Argument(metavar="BUNDLE", help="A bundle id, or a ticket number for its newest bundle.")], json_out: JsonOpt = False) -> None:
    """Show a bundle's triage summary without downloading it.

    Example: helpline diag show T-1042
    """
    with credentials.connect() as client:
        detail = client.bundle(_resolve(client, ref).id)
    if json_out:
        output.print_json(detail)
        return
    output.say(f"[bold]{detail.ticket}[/] bundle {detail.id} from {output.esc(detail.hostname)}, {output.local_time(detail.created_at)}, "
               f"{detail.files} files, {output.size(detail.size)}")
    output.say(output.esc("\n".join(triage_text(detail.summary))))
    local = _default_dir(detail)
    if local.is_dir() and verified_copy(local, detail):
        output.say(f"Full report: {output.esc(local / REPORT_NAME)}")
    else:
        output.say(f"Full report: report.html in the bundle; `helpline diag get {detail.ticket} --open` downloads and opens it.")


#: The three questions `helpline share` asks, as `diag show` labels the answers.
_ANSWER_LABELS = (("what_happened", "What happened"), ("since_when", "Since when"), ("already_tried", "Already tried"))


def triage_text(summary: dict[str, Any]) -> list[str]:
    """The lines `diag show` prints from a bundle's summary.json: what the user said, what needs attention,
    the top errors with one example each, load, memory and disks. Missing parts say so rather than vanish."""
    from agent.bundle.summary import attention_lines

    def text(value: Any) -> str | None:
        return value.strip() if isinstance(value, str) and value.strip() else None

    lines: list[str] = []
    os_info = summary.get("os") or {}
    lines.append(f"OS: {os_info.get('name') or '—'} {os_info.get('version') or ''} (kernel {os_info.get('kernel') or '—'})"
                 + (f", up {summary['uptime']}" if text(summary.get("uptime")) else ""))
    answers = summary.get("answers") if isinstance(summary.get("answers"), dict) else {}
    lines.append("The user says:")
    for key, label in _ANSWER_LABELS:
        lines.append(f"  {label}: {text(answers.get(key)) or '(not answered)'}")
    attention = attention_lines(summary)
    lines.append("Needs attention:" if attention else "Needs attention: nothing found.")
    lines.extend(f"  • {line}" for line in attention)
    errors = [e for e in ((summary.get("errors") or {}).get("top") or []) if isinstance(e, dict)]
    lines.append("Top errors:" if errors else "Top errors: none in the logs read.")
    for entry in errors[:5]:
        lines.append(f"  {entry.get('count') or 0}× {entry.get('message')}")
        if text(entry.get("example")):
            lines.append(f"     e.g. {entry['example']}")
    hardware = summary.get("hardware") or {}
    load = [x for x in hardware.get("load_average") or [] if isinstance(x, (int, float))]
    cores = hardware.get("cores")
    lines.append("Load: " + (" ".join(f"{x:.2f}" for x in load) + (f" (1, 5, 15 min; {cores} threads)" if cores else "")
                             if load else "not measured"))
    total, available = hardware.get("memory_total"), hardware.get("memory_available")
    if isinstance(total, int) and total > 0:
        used = total - available if isinstance(available, int) else None
        percent = hardware.get("memory_used_percent")
        lines.append(f"Memory: {human_size(used) + ' of ' if used is not None else ''}{human_size(total)} used"
                     + (f" ({percent:g} %)" if isinstance(percent, (int, float)) else ""))
    else:
        lines.append("Memory: not measured")
    disks = [d for d in summary.get("disks") or [] if isinstance(d, dict)]
    lines.append("Disks:" if disks else "Disks: not measured")
    for disk in disks[:8]:
        size, free, percent = disk.get("size"), disk.get("free"), disk.get("used_percent")
        lines.append(f"  {disk.get('mount')}: {human_size(size) if isinstance(size, int) else '?'}"
                     + (f", {percent:g} % used" if isinstance(percent, (int, float)) else "")
                     + (f", {human_size(free)} free" if isinstance(free, int) else ""))
    if len(disks) > 8:
        lines.append(f"  … and {len(disks) - 8} more")
    return lines


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
