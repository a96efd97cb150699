"""The engineer's side of a remote session: connect with your own ssh, relay, list, chat, recordings.

`helpline connect` asks the server for a grant for one of your registered SSH
keys, waits for the user to approve it, and then runs your own `ssh` with
`helpline relay SESSION` as its ProxyCommand and the PC's session host key
pinned in a known_hosts file of its own (no trust on first use). The relay's
one-time token is fetched by `helpline relay` itself with your saved login, so
it never appears in an argument list or in a printed ssh_config.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.client import HelplineClient
from agent.paths import config_dir, write_private
from cli import credentials, output
from cli.commands.engineer import PANEL, JsonOpt
from protocol.errors import (
    AmbiguousError,
    ConfigError,
    ConflictError,
    ExitStatus,
    ForbiddenError,
    HelplineError,
    InvalidInputError,
    NotFoundError,
)
from protocol.grants import Scope, openssh_fingerprint
from protocol.identifiers import describe_candidates, id_prefix, short_id, short_ids
from protocol.schemas import parse_input
from protocol.sessions import (
    MAX_WAIT_SECONDS,
    ChatMessage,
    GrantIssued,
    GrantRequest,
    SessionEnd,
    SessionPublic,
    SessionState,
)
from protocol.tickets import parse_ticket_ref, ticket_label
from protocol.untrusted import contained, printable, safe_component

if TYPE_CHECKING:
    from agent.relay_socket import RelayStream

#: The keys `helpline connect` tries, in this order, when no --key is given (the first one registered wins).
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
#: How long after a grant's consent window the engineer's side still waits for the server's word.
ANSWER_GRACE = timedelta(seconds=30)
WITHDRAWN = "the engineer withdrew the request"
LIVE_STATES = (SessionState.WAITING, SessionState.REQUESTED, SessionState.APPROVED, SessionState.ACTIVE)

SessionArg = Annotated[str, typer.Argument(metavar="SESSION", help="A session id (or a unique start of it), or a ticket like T-1042 that has one such session.")]


# --- finding the session ------------------------------------------------------------------------------


def _label(s: SessionPublic) -> str:
    return f"{s.hostname}, {s.ticket}, {s.state.value}"


def find_session(client: HelplineClient, reference: str, *, wanted: tuple[SessionState, ...] = LIVE_STATES,
                 what: str = "live") -> SessionPublic:
    """The session ``reference`` names: a ticket with exactly one session in ``wanted`` states, or a session id (or start).

    NotFoundError when none matches, AmbiguousError (listing them) when several do,
    InvalidInputError when ``reference`` is neither a ticket nor a session id.
    """
    text = reference.strip()
    try:
        number = parse_ticket_ref(text)
    except InvalidInputError:
        number = None
    if number is not None:
        label = ticket_label(number)
        found = [s for s in client.sessions(ticket=label) if s.state in wanted]
        if not found:
            raise NotFoundError(f"No {what} session on {label}.",
                                hint=f"Ask the user to run `helpline session` on their PC; "
                                     f"`helpline sessions --ticket {label}` lists the ticket's sessions.")
        if len(found) > 1:
            raise AmbiguousError(f"{label} has {len(found)} {what} sessions: "
                                 + describe_candidates([(s.id, printable(s.hostname, multiline=False)) for s in found], 5) + ".",
                                 hint="Give the session id instead of the ticket.")
        return found[0]
    prefix = id_prefix(text)
    if prefix is None:
        raise InvalidInputError(f"{printable(text[:40], multiline=False)!r} is neither a ticket nor a session id.",
                                hint="Give a ticket like T-1042 or a session id from `helpline sessions`.")
    if len(prefix) == 36:
        return client.session(prefix)
    found = [s for s in client.sessions() if s.id.startswith(prefix)]
    if not found:
        raise NotFoundError(f"No session starts with {prefix}.", hint="List sessions with `helpline sessions`.")
    if len(found) > 1:
        raise AmbiguousError(f"{prefix} could be any of: "
                             + describe_candidates([(s.id, printable(_label(s), multiline=False)) for s in found], 5) + ".",
                             hint="Give more of the session id.")
    return found[0]


# --- the engineer's key ---------------------------------------------------------------------------------


def _public_half(path: Path) -> tuple[Path, Path]:
    """(the key to give ssh's -i, its .pub file) for a private key path or a .pub path."""
    if path.name.endswith(".pub"):
        private = path.with_name(path.name[:-4])
        return (private if private.exists() else path), path
    return path, path.with_name(path.name + ".pub")


def choose_key(client: HelplineClient, key: Path | None) -> tuple[Path, str, str]:
    """(the identity file for ssh, the public key line, its fingerprint) of a key registered to this account.

    With ``key``, that key or a ConfigError saying it is not registered; without, the
    first of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that is registered.
    """
    registered = {k.fingerprint for k in client.ssh_keys()}
    if key is not None:
        candidates = [key.expanduser()]
    else:
        home = Path.home() / ".ssh"
        candidates = [home / name for name in DEFAULT_KEYS if (home / f"{name}.pub").exists()]
    for candidate in candidates:
        identity, public = _public_half(candidate)
        try:
            line = public.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"Cannot read the public key {public}: {exc.strerror or exc}.",
                              hint="Give the key with --key ~/.ssh/KEY (its .pub file must be beside it).") from exc
        try:
            fingerprint = openssh_fingerprint(line)
        except InvalidInputError as exc:
            raise ConfigError(f"{public} is not an OpenSSH public key.", hint="Give another key with --key.") from exc
        if fingerprint in registered:
            return identity, line, fingerprint
        if key is not None:
            raise ConfigError(f"The key {public} ({fingerprint}) is not registered to your account.",
                              hint=f"Register it with `helpline ssh-key add {public}`, or choose a registered one with --key.")
    if not registered:
        raise ConfigError("Your account has no SSH key registered.",
                          hint="Register one with `helpline ssh-key add ~/.ssh/id_ed25519.pub`.")
    raise ConfigError("None of ~/.ssh/id_ed25519, id_ecdsa, id_rsa is one of your registered keys.",
                      hint="Choose one with --key PATH, or register yours with `helpline ssh-key add ~/.ssh/id_ed25519.pub`.")


# --- asking and waiting ----------------------------------------------------------------------------------


def note(message: str) -> None:
    """A progress line on standard error (standard output belongs to ssh or to a printed config)."""
    console = output.err_console()
    console.print(console.render_str(printable(message)))


def _scopes_text(scopes: list[str] | list[Scope]) -> str:
    names = sorted({Scope(s).value for s in scopes} | {Scope.VIEW.value}, key=[s.value for s in Scope].index)
    return ", ".join(names)


def wait_for_answer(client: HelplineClient, issued: GrantIssued) -> SessionPublic:
    """Long-poll the grant until the user answers or its window closes; the session as it then is."""
    session = issued.session
    grant_id = str(issued.grant.payload.get("grant_id") or session.grant_id)
    closes = session.grant_expires_at or datetime.now(UTC) + timedelta(minutes=10)
    deadline = closes + ANSWER_GRACE
    while True:
        left = (deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            return session
        session = client.grant_status(session.id, grant_id, wait=max(1, min(MAX_WAIT_SECONDS, int(left))))
        if session.state is not SessionState.REQUESTED or session.grant_id != grant_id:
            return session


def approved_or_raise(session: SessionPublic, grant_id: str) -> SessionPublic:
    """``session`` if the user approved grant ``grant_id``; otherwise the one-line reason as an error.

    A refusal is exit status 5 (forbidden); a request that ran out, was replaced or
    whose session ended is 7 (conflict). Nothing was opened in either case.
    """
    if session.grant_id == grant_id and session.state in (SessionState.APPROVED, SessionState.ACTIVE):
        return session
    reason = printable(session.end_reason or "", multiline=False).strip()
    if reason.startswith("refused"):
        why = reason.removeprefix("refused").lstrip(": ").strip()
        raise ForbiddenError(f"The user refused the session{f' ({why})' if why else ''}.",
                             hint="Nothing was opened. Talk to the user before asking again.")
    if (session.grant_id == grant_id and session.state is SessionState.REQUESTED) or "did not answer" in reason:
        raise ConflictError("The user did not answer in time; the request has expired.",
                            hint="Call the user, then run `helpline connect` again.")
    if session.state is SessionState.ENDED:
        raise ConflictError(f"The session ended before it was approved{f' ({reason})' if reason else ''}.",
                            hint="Ask the user to run `helpline session` again.")
    if session.grant_id not in (None, grant_id):
        raise ConflictError("Another request replaced yours on this session.", hint="See `helpline sessions`.")
    raise ForbiddenError("The user refused the session.", hint="Nothing was opened. Talk to the user before asking again.")


def withdraw(client: HelplineClient, session_id: str) -> None:
    """End the session whose request the engineer stopped waiting on, so no approval outlives their interest."""
    try:
        client.engineer_end_session(session_id, SessionEnd(reason=WITHDRAWN))
    except (HelplineError, KeyboardInterrupt):
        pass  # the request still runs out by itself at the end of its window


def request_and_wait(client: HelplineClient, session: SessionPublic, fingerprint: str, scopes: list[Scope],
                     minutes: int) -> tuple[GrantIssued, SessionPublic]:
    """Ask for a grant and wait for the user's answer; (the grant, the approved session) or an error."""
    body = parse_input(GrantRequest, key_fingerprint=fingerprint, scopes=[s.value for s in scopes], max_minutes=minutes)
    # From the moment the request may have reached the server until the answer is in, a Ctrl-C
    # withdraws it: one pressed while the request is sent or its lines are printed counts too.
    try:
        issued = client.request_grant(session.id, body)
        grant_id = str(issued.grant.payload.get("grant_id") or issued.session.grant_id)
        note(f"Asked {output.esc(session.username or 'the user')} on {output.esc(session.hostname)} ({issued.session.ticket}) "
             f"for {_scopes_text(scopes)}, up to {output.duration(minutes)}.")
        note(f"Waiting for the user to approve… verification: [bold]{output.esc(issued.verification)}[/]")
        note("The user's screen shows the same digits once your key is accepted; read them out to check.")
        answered = wait_for_answer(client, issued)
    except KeyboardInterrupt:
        withdraw(client, session.id)
        raise HelplineError("Stopped waiting; the request was withdrawn and nothing was opened.",
                            hint="The user's offer ended with it: ask them to run `helpline session` again when you are ready.",
                            status=ExitStatus.INTERRUPTED) from None
    return issued, approved_or_raise(answered, grant_id)


# --- ssh and its configuration ---------------------------------------------------------------------------


def host_alias(session_id: str) -> str:
    return f"helpline-{short_id(session_id)}"


def session_dir(session_id: str) -> Path:
    return config_dir() / "sessions" / safe_component(session_id, fallback="session")


def pin_host_key(session_id: str, host_key: str) -> Path:
    """Write a known_hosts file holding only the session's host key under its alias; its path."""
    line = host_key.strip()
    if "\n" in line or "\r" in line or len(line.split()) < 2:
        raise InvalidInputError("The server sent a session host key that is not one OpenSSH key line.")
    openssh_fingerprint(line)  # refuses anything that is not a key
    kind, blob = line.split()[:2]
    path = session_dir(session_id) / "known_hosts"
    write_private(path, f"{host_alias(session_id)} {kind} {blob}\n".encode("ascii"))
    return path


def helpline_command() -> list[str]:
    """How ssh's ProxyCommand starts this same Helpline: the running script, the one on PATH, or this Python."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name.startswith("helpline") and script.is_file():
        return [str(script.resolve())]
    found = shutil.which("helpline")
    if found:
        return [found]
    return [sys.executable, "-c", "from cli.main import main; main()"]


def _ssh_escape(value: str) -> str:
    """A value for ssh options that expand %-tokens: a literal % is written %%."""
    return value.replace("%", "%%")


def proxy_command(session_id: str) -> str:
    return _ssh_escape(" ".join(shlex.quote(part) for part in [*helpline_command(), "relay", session_id]))


def control_path(session_id: str) -> str:
    """Where ssh keeps the session's shared connection (ControlPath), short enough for a Unix socket.

    One relay connection carries the whole session, so `ssh`, `sftp` and `scp` share
    it. The folder is private to this user; a folder someone else owns is refused.
    """
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    folder = base / f"helpline-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(f"{folder} is not a private folder of yours.", hint="Remove it and try again.")
    return str(folder / short_id(session_id))


def ssh_options(session: SessionPublic, known_hosts: Path, identity: Path) -> list[tuple[str, str]]:
    """The ssh options that reach ``session`` through the relay with its host key pinned, as (name, value)."""
    return [
        ("User", session.username or os.environ.get("USER", "helpline")),
        ("ProxyCommand", proxy_command(session.id)),
        ("HostKeyAlias", host_alias(session.id)),
        ("UserKnownHostsFile", _ssh_escape(str(known_hosts))),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("StrictHostKeyChecking", "yes"),
        ("UpdateHostKeys", "no"),
        ("CheckHostIP", "no"),
        ("IdentityFile", _ssh_escape(str(identity))),
        ("IdentitiesOnly", "yes"),
        ("ControlMaster", "auto"),
        ("ControlPath", _ssh_escape(control_path(session.id))),
    ]


def ssh_argv(session: SessionPublic, known_hosts: Path, identity: Path, extra: list[str]) -> list[str]:
    """The engineer's ssh command line: our options, the alias, then what they added after `--`."""
    argv = ["ssh"]
    for name, value in ssh_options(session, known_hosts, identity):
        argv += ["-o", f"{name}={value}"]
    # OpenSSH reads options after the destination too, so `-- -L 5900:localhost:5900` and `-- uptime` both work.
    return [*argv, host_alias(session.id), *extra]


def _config_value(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) and not value.startswith('"') else value


def ssh_config(session: SessionPublic, known_hosts: Path, identity: Path) -> str:
    """A user-level ssh_config block for the session, so `sftp helpline-…`, `scp` and other tools reach it."""
    lines = [f"# Helpline session {session.id} on {printable(session.hostname, multiline=False)} ({session.ticket})",
             f"Host {host_alias(session.id)}"]
    for name, value in ssh_options(session, known_hosts, identity):
        lines.append(f"    {name} {value if name == 'ProxyCommand' else _config_value(value)}")
    return "\n".join(lines) + "\n"


def _check_ssh() -> None:
    if shutil.which("ssh") is None:
        raise ConfigError("OpenSSH's ssh is not installed on this computer.",
                          hint="Install the OpenSSH client (apt-get install openssh-client), then try again.")


def connect(
    target: SessionArg,
    scope: Annotated[list[Scope] | None, typer.Option("--scope", "-s", help="What to ask for (repeatable): view, control, files, forward. View is always included.")] = None,
    minutes: Annotated[int, typer.Option("--minutes", "-m", metavar="MINUTES", min=1, max=480, help="The longest the session may last.")] = 60,
    key: Annotated[Path | None, typer.Option("--key", "-i", metavar="KEY", help="Your SSH private key (its .pub beside it), registered with `helpline ssh-key add` (default: the first registered of ~/.ssh/id_ed25519, id_ecdsa, id_rsa).")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Once approved, print an ssh_config block for sftp, scp and other tools instead of running ssh.")] = False,
    extra: Annotated[list[str] | None, typer.Argument(metavar="SSH_ARGS", help="Anything after -- goes to ssh: options like -L 5900:localhost:5900, or a command.")] = None,
) -> None:
    """Ask the user's PC for a session and open it with your own ssh once the user approves.

    The server signs a grant for your key; the user sees who you are, the ticket, the scopes and the time, and answers on their PC. Both screens show the same verification digits. ssh then runs with `helpline relay` as its ProxyCommand and the PC's session key pinned: no first-use prompt.

    Examples:
      helpline connect T-1042 --scope control
      helpline connect T-1042 -s control -s files --minutes 30 -- -L 5900:localhost:5900
      helpline connect 3f2c9a1b -s files --print-config >> ~/.ssh/config   then: sftp helpline-3f2c9a1b
    """
    _check_ssh()
    scopes = list(dict.fromkeys([Scope.VIEW, *(scope or [])]))
    with credentials.connect() as client:
        session = find_session(client, target, wanted=(SessionState.WAITING,), what="waiting")
        identity, _line, fingerprint = choose_key(client, key)
        issued, session = request_and_wait(client, session, fingerprint, scopes, minutes)
    known_hosts = pin_host_key(session.id, issued.host_key)
    note(f"Approved. Session {short_id(session.id)} on {output.esc(session.hostname)} for {_scopes_text(session.scopes or scopes)}.")
    if print_config:
        sys.stdout.write(ssh_config(session, known_hosts, identity))
        sys.stdout.flush()
        note(f"Add this to ~/.ssh/config (or use `ssh -F FILE`), then: sftp {host_alias(session.id)}")
        return
    argv = ssh_argv(session, known_hosts, identity, list(extra or []))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)  # the terminal is ssh's from here on


# --- the ProxyCommand ---------------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _copy(src: int, dst: int, size: int = 256 * 1024) -> None:
    """Copy ``src`` to ``dst`` with large reads until ``src`` ends."""
    while data := os.read(src, size):
        _write_all(dst, data)


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Ask for a larger pipe buffer on ``fd`` if it is a pipe (Linux; capped by fs.pipe-max-size); else nothing."""
    import fcntl

    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    try:
        if setting is not None and stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, setting, size)
    except OSError:
        pass  # the default pipe still works


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def pump(stream: RelayStream, read_fd: int = 0, write_fd: int = 1) -> None:
    """Carry ``read_fd`` into the relay ``stream`` and the stream to ``write_fd`` until either side ends.

    ssh talks to this ProxyCommand over pipes: the relay client's own loop
    reads and writes them (:meth:`agent.relay_socket.RelayStream.splice_pipes`),
    so a chunk crosses no thread and no socket on its way. Widened from 64 KiB,
    the pipes let both sides move a whole read at a time. Anything else (a
    socket, a file, or Windows, whose loop cannot wait on pipes) goes through the
    stream's socket bridge with a thread per direction (:func:`pump_bridge`).
    """
    if os.name != "nt":
        _widen_pipe(read_fd)
        _widen_pipe(write_fd)
        if _is_pipe(read_fd) and _is_pipe(write_fd):
            stream.splice_pipes(read_fd, write_fd)
            return
    pump_bridge(stream.bridge_to_socket(), read_fd, write_fd)


def pump_bridge(bridge: socket.socket, read_fd: int = 0, write_fd: int = 1) -> None:
    """Copy ``read_fd`` into the relay's ``bridge`` socket and the bridge to ``write_fd`` until either side ends.

    The end of ``read_fd`` shuts the bridge for writing (the relay side then ends);
    the relay's end shows as the bridge's end of file. No per-byte work happens
    here: the relay client frames what the socket carries.
    """

    def upstream() -> None:
        try:
            _copy(read_fd, bridge.fileno())
        except OSError:
            pass  # the bridge closed: the other direction ends too
        finally:
            with contextlib.suppress(OSError):
                bridge.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, name="helpline-relay-up", daemon=True).start()
    try:
        _copy(bridge.fileno(), write_fd)
    except BrokenPipeError:
        pass  # ssh went away
    finally:
        bridge.close()


def relay(target: Annotated[str, typer.Argument(metavar="SESSION", help="The session id, as `helpline connect` writes it.")]) -> None:
    """Carry one ssh connection to a session through the server's relay (ssh's ProxyCommand).

    You do not run this yourself: `helpline connect` and the `--print-config` block make ssh run it. It fetches a one-time relay ticket with your saved login, so no token is ever on a command line.

    Example: ssh -o ProxyCommand='helpline relay 3f2c9a1b-…' helpline-3f2c9a1b
    """
    from agent.relay_socket import open_relay

    if sys.stdout.isatty():
        raise InvalidInputError("`helpline relay` speaks SSH on its standard output; it is ssh's ProxyCommand.",
                                hint="Run `helpline connect SESSION` instead.")
    with credentials.connect() as client:
        session = find_session(client, target, wanted=(SessionState.APPROVED, SessionState.ACTIVE), what="approved")
        ticket = client.engineer_relay_ticket(session.id)
    pump(open_relay(ticket))


# --- listing, chat, recordings ---------------------------------------------------------------------------------


def sessions(
    ticket: Annotated[str | None, typer.Option("--ticket", "-t", metavar="TICKET", help="Only this ticket's sessions.")] = None,
    state: Annotated[SessionState | None, typer.Option("--state", help="Only sessions in this state.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """List remote sessions, newest first: who offered them, their state, who is connected and for what.

    Examples:
      helpline sessions --ticket T-1042
      helpline sessions --state waiting --json
    """
    label = ticket_label(parse_ticket_ref(ticket)) if ticket else None
    with credentials.connect() as client:
        found = client.sessions(ticket=label, state=state)
    if json_out:
        output.print_json(found)
        return
    if not found:
        output.say("No sessions match.")
        return
    short = short_ids(s.id for s in found)
    rows = []
    for s in found:
        when = s.ended_at or s.started_at or s.created_at
        moved = f"{output.size(s.bytes_to_pc)} in, {output.size(s.bytes_from_pc)} out" if s.started_at else "—"
        rows.append((short[s.id], s.ticket, s.hostname, s.username or "—", s.state.value, s.engineer or "—",
                     ", ".join(s.scopes) or "—", output.local_time(when), moved, s.end_reason or ""))
    output.table(None, ["Id", "Ticket", "PC", "User", "State", "Engineer", "Scopes", "When", "Bytes", "Ended because"], rows)


def _chat_line(entry) -> str:
    who = "you" if entry.sender == "engineer" else f"{entry.name} (user)"
    return f"{output.local_time(entry.at)}  {output.esc(who)}: {output.esc(printable(entry.text, multiline=False))}"


def chat(
    target: SessionArg,
    text: Annotated[str | None, typer.Argument(metavar="TEXT", help="The message to send; without it, show the chat and follow the user's messages.")] = None,
) -> None:
    """Send the user a short message, or follow the session's chat until it ends (Ctrl-C stops following).

    Examples:
      helpline chat T-1042 "I am looking at the printer settings now"
      helpline chat 3f2c9a1b
    """
    with credentials.connect() as client:
        session = find_session(client, target)
        if text is not None:
            entry = client.post_session_chat(session.id, parse_input(ChatMessage, text=text))
            output.say(f"Sent to {output.esc(session.username or 'the user')} on {output.esc(session.hostname)} at {output.local_time(entry.at)}.")
            return
        after = 0
        output.say(f"Chat of session {short_id(session.id)} on {output.esc(session.hostname)} ({session.ticket}); Ctrl-C stops.")
        try:
            while True:
                entries = client.session_chat(session.id, after=after, wait=MAX_WAIT_SECONDS)
                for entry in entries:
                    output.say(_chat_line(entry))
                    after = max(after, entry.seq)
                if not entries:
                    session = client.session(session.id)
                    if session.state is SessionState.ENDED:
                        output.say(f"The session has ended{f' ({output.esc(session.end_reason)})' if session.end_reason else ''}.")
                        return
        except KeyboardInterrupt:
            return


# Terminal control sequences a recording may hold: CSI, OSC (ended by BEL or ST), and other two-character escapes.
_CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x1b.")


def readable(text: str) -> str:
    """Terminal output made safe to show: control sequences dropped, carriage returns as line ends, the rest printable."""
    text = _CONTROL_SEQUENCE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return printable(text, multiline=True)


def play(path: Path, speed: float, write=None) -> int:
    """Show an asciicast v2 file's output, made readable, with its pauses (at most 1 s each) divided by ``speed``.

    ``speed`` 0 shows it at once. Returns the number of output events shown;
    InvalidInputError if the file is not an asciicast v2 recording.
    """
    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    shown, previous = 0, 0.0
    with path.open(encoding="utf-8", errors="replace") as fh:
        try:
            header = json.loads(fh.readline())
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("version") != 2:
            raise InvalidInputError(f"{path} is not an asciicast v2 recording.")
        for line in fh:
            try:
                when, kind, data = json.loads(line)
                when = float(when)
            except (ValueError, TypeError):
                continue
            if kind != "o" or not isinstance(data, str):
                continue
            if speed > 0:
                time.sleep(min(max(when - previous, 0.0), 1.0) / speed)
            previous = when
            write(readable(data))
            shown += 1
    return shown


def recording(
    target: SessionArg,
    output_path: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", help="Where to save it (default: session-ID.cast here); never overwritten.")] = None,
    play_it: Annotated[bool, typer.Option("--play", help="Also show what the session's terminal showed, made readable (control sequences removed).")] = False,
    speed: Annotated[float, typer.Option("--speed", metavar="FACTOR", min=0, help="With --play: how much faster than the session (0: at once).")] = 1.0,
) -> None:
    """Save a session's recording (asciicast v2); every download is audited.

    A recording holds what the PC's terminal showed, which is untrusted: it is saved to a file, never printed raw. `--play` shows it with control sequences removed; `asciinema play FILE` replays it as it was.

    Examples:
      helpline recording T-1042 --output t1042.cast
      helpline recording 3f2c9a1b --play --speed 4
    """
    with credentials.connect() as client:
        session = find_session(client, target, wanted=tuple(SessionState), what="recorded")
        name = output_path.expanduser() if output_path else Path(f"session-{short_id(session.id)}.cast")
        folder = name.parent.resolve()
        dest = contained(folder, safe_component(name.name, fallback="session.cast"))
        if dest.exists():
            raise ConflictError(f"{dest} already exists.", hint="Choose another file with --output FILE.")
        partial = contained(folder, dest.name + ".part")
        if partial.exists():
            raise ConflictError(f"{partial} is in the way.", hint="Remove it, or choose another file with --output FILE.")
        try:
            size, _sha = client.download_recording(session.id, partial)
            partial.rename(dest)
        finally:
            partial.unlink(missing_ok=True)
    output.say(f"Saved the recording of session {short_id(session.id)} on {output.esc(session.hostname)} "
               f"({output.size(size)}) to {output.esc(dest)}.")
    if play_it:
        play(dest, speed)


def register(app: typer.Typer) -> None:
    """Add the engineer's session commands to the `helpline` app."""
    app.command(rich_help_panel=PANEL, context_settings={"allow_interspersed_args": True})(connect)
    app.command(rich_help_panel=PANEL)(relay)
    app.command(rich_help_panel=PANEL)(sessions)
    app.command(rich_help_panel=PANEL)(chat)
    app.command(rich_help_panel=PANEL)(recording)
