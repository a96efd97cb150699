"""The PC's embedded SSH server for one session: it obeys one verified grant and the user's consent, nothing else.

Deny by default: every authentication method, channel type, request, subsystem and
forward is refused unless the grant's scopes, still held, name it — view gives a
session channel whose shell output the engineer sees but whose input is dropped;
control lets input reach the shell and allows ``exec``; files allows the ``sftp``
subsystem (the system's OpenSSH ``sftp-server`` as the user's child on pipes, or the
Python server of :mod:`agent.session.files` where there is none); forward allows
``direct-tcpip`` to loopback targets only. Only the engineer key named in the grant
authenticates, only after the user consented to exactly that grant, and only within
its validity. The user can take scopes back at
any moment, and the session ends (shell and every process it started included) at
the grant's expiry or maximum duration, whichever comes first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_CONNECT_FAILED,
    OPEN_SUCCEEDED,
)

from agent.session import channel_buffer
from agent.session.files import SFTP_SERVERS, UserFiles, find_sftp_server, sftp_server_argv
from agent.session.pty import Piped, Terminal, login_shell, shell_environment, start_piped, start_terminal
from agent.session.recording import Recording
from protocol.errors import ConfigError, ForbiddenError, InvalidInputError
from protocol.grants import Scope, SessionGrant, openssh_key_blob, verification_string
from protocol.sessions import TIME_UP_REASON

# Channels buffer their input as queued packets, not in paramiko's array (see agent.session.channel_buffer).
channel_buffer.install()

log = logging.getLogger(__name__)

#: Why a session nobody joined ended by itself (the time limit's reason is protocol.sessions.TIME_UP_REASON).
GRANT_EXPIRED = "the session grant expired before the engineer connected"

# The window each channel advertises is OpenSSH's own server's (2 MiB). The engineer's OpenSSH client reads
# ahead into its channel buffer up to the window whenever this side takes bytes slower than it sends them, and
# the larger that buffer, the more its handling costs (copies into fresh pages and zeroing were over half of ssh's
# CPU): with a 16 MiB window ssh spent 3-4x the CPU it spends against sshd on a bulk upload, and the copy slowed
# with it; at 2 MiB it spends what it spends against sshd (bench/README.md, session section).
WINDOW_SIZE = 2 * 1024 * 1024
# Large packets cut paramiko's per-packet cost (OpenSSH's client sends up to the size a channel advertises).
MAX_PACKET_SIZE = 128 * 1024
# Only AES-GCM is offered: the client's order decides among shared ciphers, and OpenSSH (since 6.2)
# lists CTR first, so offering CTR too would give up authenticated encryption and AES-NI throughput.
CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
# One read moves up to this much: a bulk copy costs one Python round per 256 KiB, not per packet.
READ_SIZE = 256 * 1024
# A read from a channel takes all the channel holds (at most a window): paramiko's channel buffer moves what a
# partial read leaves on every read, which for a full window costs far more than the data read.
CHANNEL_READ = WINDOW_SIZE
# Like OpenSSH's MaxAuthTries: after this many refused keys a connection cannot authenticate any more.
MAX_AUTH_TRIES = 6
POLL = 0.1
LOOPBACK_NAMES = {"localhost": "127.0.0.1", "ip6-localhost": "::1"}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_host_key() -> paramiko.Ed25519Key:
    """An Ed25519 host key made for one session and kept in memory only."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode("ascii")))


def key_fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:…`` of an SSH public key, as OpenSSH prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode("ascii").rstrip("=")


def loopback_target(host: str) -> str | None:
    """The loopback address to connect to for ``host``, or None if it is not loopback (names are not resolved)."""
    if host.lower() in LOOPBACK_NAMES:
        return LOOPBACK_NAMES[host.lower()]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return str(address) if address.is_loopback else None


@dataclass
class _Connection:
    """One engineer SSH connection and what runs for it."""

    transport: paramiko.Transport
    terminals: list[Terminal | Piped] = field(default_factory=list)
    sockets: dict[int, socket.socket] = field(default_factory=dict)
    forwards: list[socket.socket] = field(default_factory=list)
    key: paramiko.PKey | None = None
    announced: bool = False


class SessionHost:
    """One session's SSH server: serve engineer connections on sockets until the grant ends or the user ends it.

    ``grant`` must already be verified (:func:`protocol.grants.verify_grant`) and
    claimed (:class:`agent.session.grants.UsedGrants`). ``on_authenticated`` gets the
    verification string and the SSH user name once the engineer's key has
    authenticated; ``on_output`` gets every byte the shell shows (the user's mirror);
    ``on_end`` gets the reason the session ended. ``on_time_up`` ends the session when
    its time is up, given the reason (default :meth:`end`): the PC's session tells the
    server why before the relay drops. ``shell`` replaces the user's login
    shell (tests). ``sftp_servers`` lists the absolute paths where OpenSSH's
    ``sftp-server`` may be (empty: always the Python server). The maximum duration
    counts from the host's creation.
    """

    def __init__(
        self,
        grant: SessionGrant,
        *,
        host_key: paramiko.PKey | None = None,
        recording: Recording | None = None,
        on_authenticated: Callable[[str, str], None] | None = None,
        on_output: Callable[[bytes], None] | None = None,
        on_end: Callable[[str], None] | None = None,
        on_time_up: Callable[[str], None] | None = None,
        shell: Sequence[str] | None = None,
        sftp_servers: Sequence[str] = SFTP_SERVERS,
        clock: Callable[[], datetime] = _utcnow,
        skew: timedelta = timedelta(seconds=60),
        grace: float = 1.0,
    ):
        self.grant = grant
        self.host_key = host_key or new_host_key()
        if key_fingerprint(self.host_key) != grant.host_key_fingerprint:
            raise ForbiddenError("The session grant is for another session host key.")
        self.recording = recording
        self.on_authenticated = on_authenticated
        self.on_output = on_output
        self.on_end = on_end
        self.on_time_up = on_time_up
        self.shell_argv = list(shell) if shell else None
        self.sftp_server = find_sftp_server(list(sftp_servers))
        self.clock = clock
        self.skew = skew
        self.grace = grace
        self._engineer_blob = openssh_key_blob(grant.engineer_key)
        self._scopes = set(grant.scopes)
        self._consented = False
        self._joined = False  # an engineer key has authenticated
        self._lock = threading.RLock()
        self._ended = threading.Event()
        self._finished = threading.Event()  # set once everything is closed and reaped
        self.end_reason: str | None = None
        self._connections: list[_Connection] = []
        self.terminal: Terminal | None = None
        self._shell_channel: paramiko.Channel | None = None
        self._scoped_channels: dict[Scope, list[paramiko.Channel]] = {Scope.FILES: [], Scope.FORWARD: []}
        self._sftp_servers: list[Piped] = []  # running under the files scope: ended when it is taken back
        self._deadline = time.monotonic() + grant.max_duration_seconds
        self._watchdog = threading.Thread(target=self._watch, name="helpline-session-deadline", daemon=True)
        self._watchdog.start()

    # The user's side: consent, scopes, the end.

    @property
    def host_key_fingerprint(self) -> str:
        return key_fingerprint(self.host_key)

    def known_hosts_line(self, host: str = "127.0.0.1", port: int = 22) -> str:
        """The line an SSH client's known_hosts needs to pin this session's host key."""
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.host_key.get_name()} {self.host_key.get_base64()}"

    def give_consent(self, grant_id: str) -> None:
        """Record the user's yes to the grant with ``grant_id``; a yes to any other grant opens nothing."""
        if grant_id != self.grant.grant_id:
            raise ForbiddenError("The consent is for another session grant.")
        with self._lock:
            self._consented = True

    @property
    def consented(self) -> bool:
        return self._consented

    @property
    def joined(self) -> bool:
        """True once the engineer's key has authenticated."""
        return self._joined

    @property
    def scopes(self) -> frozenset[Scope]:
        with self._lock:
            return frozenset(self._scopes)

    def allows(self, scope: Scope) -> bool:
        with self._lock:
            return scope in self._scopes and not self._ended.is_set()

    def revoke(self, scope: Scope | str) -> None:
        """Take ``scope`` back now: control stops input reaching the shell; files and forward close their channels.

        Taking back view ends the session, as nothing can be shown any more.
        """
        try:
            scope = Scope(scope)
        except ValueError as exc:
            raise InvalidInputError(f"Unknown session scope {scope!r}.") from exc
        with self._lock:
            self._scopes.discard(scope)
            closing = self._scoped_channels.get(scope, [])
            self._scoped_channels[scope] = []
            stopping = self._sftp_servers if scope is Scope.FILES else []
            if scope is Scope.FILES:
                self._sftp_servers = []
        for channel in closing:
            channel.close()
        for server in stopping:
            server.end(self.grace)
        if scope is Scope.VIEW:
            self.end("the user took back the view")

    @property
    def sftp_server_pids(self) -> tuple[int, ...]:
        """Process ids of the ``sftp-server`` children running under the files scope now."""
        with self._lock:
            return tuple(server.pid for server in self._sftp_servers if not server.ended)

    def user_input(self, data: bytes) -> None:
        """Keystrokes from the user's own terminal, which always reach the shell, whatever the engineer's scope."""
        if self.terminal is not None and not self.terminal.ended:
            self.terminal.write(data)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the session to end and be cleaned up; True if it has."""
        return self._finished.wait(timeout)

    def end(self, reason: str = "the session was ended") -> None:
        """End the session now: close every channel and connection, end the shell and everything it started."""
        with self._lock:
            if self._ended.is_set():
                return
            self._ended.set()
            self.end_reason = reason
            connections = list(self._connections)
        for connection in connections:
            self._close_connection(connection)
        if self.terminal is not None:
            self.terminal.end(self.grace)
        if self.recording is not None:
            self.recording.close()
        try:
            if self.on_end is not None:
                self.on_end(reason)
        finally:
            self._finished.set()

    def _watch(self) -> None:
        ending = self.on_time_up or self.end
        while not self._ended.wait(POLL):
            if not self._joined and self.clock() >= self.grant.expires_at:
                ending(GRANT_EXPIRED)
            elif time.monotonic() >= self._deadline:
                ending(TIME_UP_REASON)

    # The engineer's side: connections.

    def serve(self, sock: socket.socket) -> paramiko.Transport:
        """Run the SSH server side on a connected socket (returns at once; the transport runs in its own thread)."""
        if self._ended.is_set():
            sock.close()
            raise ForbiddenError("The session has ended.")
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
        options = transport.get_security_options()
        options.ciphers = tuple(c for c in CIPHERS if c in options.ciphers)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, UserFiles)
        connection = _Connection(transport)
        with self._lock:
            self._connections.append(connection)
        transport.start_server(event=threading.Event(), server=_Gate(self, connection))  # an event: do not block
        threading.Thread(target=self._accept, args=(connection,), name="helpline-session-accept", daemon=True).start()
        return transport

    def _accept(self, connection: _Connection) -> None:
        """Take the channels the gate opened; splice forwards; clean up when the connection drops."""
        transport = connection.transport
        try:
            while transport.is_active() and not self._ended.is_set():
                if transport.is_authenticated() and not connection.announced:
                    connection.announced = True
                    self._announce(connection)
                channel = transport.accept(POLL)
                if channel is None:
                    continue
                target = connection.sockets.pop(channel.get_id(), None)
                if target is not None:
                    connection.forwards.append(target)
                    if self.keep(Scope.FORWARD, channel):
                        self._splice(channel, target)
                    else:  # the scope was taken back while the channel opened
                        channel.close()
                        target.close()
        finally:
            self._close_connection(connection)

    def _announce(self, connection: _Connection) -> None:
        if self.on_authenticated is None or connection.key is None:
            return
        line = f"{connection.key.get_name()} {connection.key.get_base64()}"
        self.on_authenticated(verification_string(self.grant, line), connection.transport.get_username() or "")

    def _close_connection(self, connection: _Connection) -> None:
        for target in list(connection.sockets.values()) + connection.forwards:
            target.close()
        connection.sockets.clear()
        connection.forwards.clear()
        for terminal in list(connection.terminals):
            terminal.end(self.grace)
        connection.transport.close()
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)
            owns_shell = self._shell_channel is not None and self._shell_channel.get_transport() is connection.transport
        if owns_shell:
            self.end("the engineer disconnected")

    # Called by the gate, on the transport's thread: nothing here may block for long.

    def authenticates(self, connection: _Connection, key: paramiko.PKey) -> bool:
        kind, blob = self._engineer_blob
        now = self.clock()
        accepted = (
            self._consented
            and not self._ended.is_set()
            and key.get_name() == kind
            and hmac.compare_digest(key.asbytes(), blob)
            and self.grant.not_before - self.skew <= now < self.grant.expires_at
        )
        if accepted:
            connection.key = key
            self._joined = True
        return accepted

    def start_shell(self, connection: _Connection, channel: paramiko.Channel, pty: tuple[str, int, int] | None) -> bool:
        with self._lock:
            if self.terminal is not None or self._ended.is_set():
                return False  # one shell per session: the one the user mirrors
            term, cols, rows = pty or ("xterm-256color", 80, 24)
            shell = login_shell()
            env = shell_environment(shell, term)
            self.terminal = start_terminal(self.shell_argv, cols=cols, rows=rows, term=term, env=env)
            self._shell_channel = channel
        self._pump(channel, self.terminal, interactive=True)
        return True

    def start_command(self, connection: _Connection, channel: paramiko.Channel, command: str, pty: tuple[str, int, int] | None) -> bool:
        if not self.allows(Scope.CONTROL):
            return False
        shell = login_shell()
        if pty is None:  # no terminal asked: three pipes, as an SSH server runs such a command
            piped = start_piped([shell, "-c", command], env=shell_environment(shell, "dumb"))
            connection.terminals.append(piped)
            # Its output (and its end, which closes the channel) goes out after the exec's answer.
            channel_buffer.after_reply(channel, lambda: self._pump_piped(channel, piped))
            return True
        term, cols, rows = pty
        terminal = start_terminal([shell, "-c", command], cols=cols, rows=rows, term=term, env=shell_environment(shell, term))
        connection.terminals.append(terminal)
        channel_buffer.after_reply(channel, lambda: self._pump(channel, terminal, interactive=False))
        return True

    def start_sftp_server(self, connection: _Connection, channel: paramiko.Channel) -> bool | None:
        """Run OpenSSH's ``sftp-server`` for ``channel`` (already kept under the files scope).

        None when there is no such binary or it would not start: the caller then serves
        the channel with the Python server. Its requests and answers are not recorded
        (file contents are not terminal output); its log lines stay on this PC.
        """
        if self.sftp_server is None:
            return None
        try:
            server = start_piped(sftp_server_argv(self.sftp_server), env=shell_environment(login_shell(), "dumb"))
        except ConfigError:
            log.debug("sftp-server did not start; the Python server answers", exc_info=True)
            return None
        connection.terminals.append(server)
        with self._lock:
            held = Scope.FILES in self._scopes and not self._ended.is_set()
            if held:
                self._sftp_servers = [s for s in self._sftp_servers if not s.ended] + [server]
        if not held:  # taken back while it started
            server.end(self.grace)
            return False
        self._pump_piped(channel, server, scope=Scope.FILES, recorded=False, errors_to_channel=False)
        return True

    def open_forward(self, connection: _Connection, chanid: int, host: str, port: int) -> int:
        if not self.allows(Scope.FORWARD):
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        address = loopback_target(host)
        if address is None or not 0 < port < 65536:
            return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            target = socket.create_connection((address, port), timeout=3)
        except OSError:
            return OPEN_FAILED_CONNECT_FAILED
        target.settimeout(None)
        target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sockets[chanid] = target
        return OPEN_SUCCEEDED

    def keep(self, scope: Scope, channel: paramiko.Channel) -> bool:
        """Note ``channel`` as opened under ``scope``, to close when the scope is taken back; False if it is gone already."""
        with self._lock:
            if scope not in self._scopes or self._ended.is_set():
                return False
            live = [c for c in self._scoped_channels[scope] if not c.closed]
            self._scoped_channels[scope] = live + [channel]
            return True

    def resize(self, channel: paramiko.Channel, cols: int, rows: int) -> bool:
        if self._shell_channel is channel and self.terminal is not None and not self.terminal.ended:
            self.terminal.resize(cols, rows)
            return True
        return False

    # Byte pumps.

    def _pump(self, channel: paramiko.Channel, terminal: Terminal, *, interactive: bool) -> None:
        threading.Thread(target=self._output, args=(channel, terminal, interactive), name="helpline-session-out", daemon=True).start()
        threading.Thread(target=self._input, args=(channel, terminal, interactive), name="helpline-session-in", daemon=True).start()

    def _pump_piped(
        self,
        channel: paramiko.Channel,
        command: Piped,
        *,
        scope: Scope = Scope.CONTROL,
        recorded: bool = True,
        errors_to_channel: bool = True,
    ) -> None:
        """Output to the channel, errors to its error stream, input (while ``scope`` is held) to the command.

        The exit status goes out once the command has exited and its output has been
        sent; what it left running in the background ends with it, as for a command in a terminal.
        ``recorded`` False keeps both directions out of the recording; ``errors_to_channel``
        False keeps the command's error output on this PC (debug log only).
        """

        def log_errors(data: bytes) -> None:
            log.debug("%s: %r", command.pid, data[:512])

        def copy_out(read: Callable[[int], bytes], send: Callable[[bytes], None]) -> None:
            sending = True
            while data := read(READ_SIZE):  # read to the end, so the pipe closes here
                if recorded and self.recording is not None:
                    self.recording.output(data)
                if sending:
                    try:
                        send(data)
                    except (OSError, EOFError, paramiko.SSHException):
                        sending = False  # the channel went away; the command still ends below

        def copy_in() -> None:
            taking = True
            try:
                while data := channel.recv(CHANNEL_READ):
                    if taking and self.allows(scope):
                        if recorded and self.recording is not None:
                            self.recording.input(data)
                        try:
                            command.write(data)
                        except OSError:
                            taking = False  # the command stopped reading; the rest is dropped
            except (OSError, EOFError, paramiko.SSHException):
                log.debug("command input stopped", exc_info=True)
            command.close_input()
            while not channel.closed and not command.ended and not self._ended.is_set():
                time.sleep(POLL)
            if channel.closed and not command.ended:
                command.end(self.grace)  # the engineer closed the channel before the command finished

        def finish(readers: list[threading.Thread]) -> None:
            status = command.wait()
            command.end(self.grace)  # jobs the command left behind end with it, so the output pipes close
            for reader in readers:
                reader.join(self.grace + 5)
            try:
                if not channel.closed:
                    channel.send_exit_status(status if status is not None and status >= 0 else 255)
                    channel.shutdown_write()
                    channel.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass

        readers = [
            threading.Thread(target=copy_out, args=(command.read, channel.sendall), name="helpline-command-out", daemon=True),
            threading.Thread(
                target=copy_out,
                args=(command.read_errors, channel.sendall_stderr if errors_to_channel else log_errors),
                name="helpline-command-err",
                daemon=True,
            ),
        ]
        for thread in readers:
            thread.start()
        threading.Thread(target=copy_in, name="helpline-command-in", daemon=True).start()
        threading.Thread(target=finish, args=(readers,), name="helpline-command-end", daemon=True).start()

    def _splice(self, channel: paramiko.Channel, target: socket.socket) -> None:
        """Copy bytes both ways between a forward channel and its loopback target until either side closes."""

        def copy(read: Callable[[int], bytes], write: Callable[[bytes], None], done: Callable[[], None],
                 size: int = READ_SIZE) -> None:
            try:
                while data := read(size):
                    write(data)
            except (OSError, EOFError, paramiko.SSHException):
                pass
            finally:
                try:
                    done()
                except OSError:
                    pass

        def close_both() -> None:
            channel.close()
            target.close()

        def to_target() -> None:
            copy(channel.recv, target.sendall, lambda: target.shutdown(socket.SHUT_WR), CHANNEL_READ)

        def to_channel() -> None:
            copy(target.recv, channel.sendall, close_both)

        threading.Thread(target=to_target, name="helpline-forward-in", daemon=True).start()
        threading.Thread(target=to_channel, name="helpline-forward-out", daemon=True).start()

    def _output(self, channel: paramiko.Channel, terminal: Terminal, interactive: bool) -> None:
        """Terminal to engineer (and recording and mirror) until the terminal ends; then the exit status."""
        try:
            while not terminal.ended:
                if not terminal.readable(POLL):
                    # A job left in the background can hold the terminal open after the shell exits.
                    if terminal.poll() is not None:
                        break
                    continue
                data = terminal.read(READ_SIZE)
                if not data:
                    break
                if self.recording is not None:
                    self.recording.output(data)
                if interactive and self.on_output is not None:
                    self.on_output(data)
                if not channel.closed:
                    channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            log.debug("session output stopped", exc_info=True)
        status = terminal.wait(self.grace + 5)
        if status is None:
            status = terminal.end(self.grace)
        else:
            terminal.end(self.grace)  # jobs the command left behind end with it
        try:
            if not channel.closed:
                channel.send_exit_status(status if status is not None and status >= 0 else 255)
                channel.shutdown_write()
                channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        if interactive:
            self.end("the shell exited")

    def _input(self, channel: paramiko.Channel, terminal: Terminal, interactive: bool) -> None:
        """Engineer to terminal, while control is held; in view only, keystrokes are read and dropped.

        The end of input leaves the command running, as over any SSH connection; the
        channel's close ends it (and, for the shell, the session).
        """
        try:
            while not terminal.ended:
                data = channel.recv(CHANNEL_READ)
                if not data:
                    break
                if self.allows(Scope.CONTROL):
                    if self.recording is not None:
                        self.recording.input(data)
                    terminal.write(data)
        except (OSError, EOFError, paramiko.SSHException):
            log.debug("session input stopped", exc_info=True)
        while not channel.closed and not terminal.ended and not self._ended.is_set():
            time.sleep(POLL)
        if terminal.ended or self._ended.is_set():
            return
        if interactive:
            self.end("the engineer closed the shell")
        else:
            terminal.end(self.grace)


class _Gate(paramiko.ServerInterface):
    """paramiko's questions for one connection, answered no unless the grant, consent and scopes say yes."""

    def __init__(self, host: SessionHost, connection: _Connection):
        self.host = host
        self.connection = connection
        self.ptys: dict[int, tuple[str, int, int]] = {}
        self.refused_keys = 0

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_none(self, username: str) -> int:
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        return AUTH_FAILED

    def check_auth_interactive(self, username: str, submethods: str) -> int:
        return AUTH_FAILED

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if self.refused_keys >= MAX_AUTH_TRIES:
            return AUTH_FAILED
        if self.host.authenticates(self.connection, key):
            return AUTH_SUCCESSFUL
        self.refused_keys += 1
        return AUTH_FAILED

    def enable_auth_gssapi(self) -> bool:
        return False

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session" and self.host.allows(Scope.VIEW):
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]) -> int:
        return self.host.open_forward(self.connection, chanid, destination[0], destination[1])

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes) -> bool:
        term = term.decode("ascii", "replace") if isinstance(term, bytes) else str(term)
        printable = "".join(ch for ch in term if ch.isalnum() or ch in "-._+")[:64] or "xterm-256color"
        self.ptys[channel.get_id()] = (printable, max(1, min(width, 1000)), max(1, min(height, 1000)))
        return True

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self.host.start_shell(self.connection, channel, self.ptys.get(channel.get_id()))

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "replace") if isinstance(command, bytes) else str(command)
        return self.host.start_command(self.connection, channel, text, self.ptys.get(channel.get_id()))

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp" or not self.host.keep(Scope.FILES, channel):
            return False
        started = self.host.start_sftp_server(self.connection, channel)
        if started is None:  # no OpenSSH sftp-server on this PC: paramiko's server over agent.session.files
            return super().check_channel_subsystem_request(channel, name)
        return started

    def check_channel_window_change_request(self, channel, width, height, pixelwidth, pixelheight) -> bool:
        return self.host.resize(channel, width, height)

    def check_channel_env_request(self, channel, name, value) -> bool:
        return False

    def check_channel_x11_request(self, channel, single_connection, auth_protocol, auth_cookie, screen_number) -> bool:
        return False

    def check_channel_forward_agent_request(self, channel) -> bool:
        return False

    def check_port_forward_request(self, address: str, port: int) -> bool:
        return False  # the engineer never opens ports on the user's PC

    def check_global_request(self, kind: str, msg) -> bool:
        return False
