"""The engineer's session commands without a server: finding the session, choosing the key, the ssh
command line and config (read back by the real OpenSSH), the relay pump, and recordings made readable."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.commands import connect
from protocol.errors import (AmbiguousError, ConfigError, ConflictError, ExitStatus, ForbiddenError, HelplineError, InvalidInputError,
                             NotFoundError)
from protocol.grants import Scope, SignedGrant, openssh_fingerprint
from protocol.sessions import GrantIssued, SessionPublic, SessionState


def key_line() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def session(state: SessionState = SessionState.WAITING, **changes) -> SessionPublic:
    now = datetime.now(UTC)
    # Ids start with a letter here: an id start of digits alone names a ticket (protocol.identifiers.short_ids).
    fields = dict(id="a" + str(uuid.uuid4())[1:], ticket="T-1042", agent_id="agent-1", hostname="laptop-7", username="dana",
                  state=state, host_key_fingerprint=openssh_fingerprint(key_line()), created_at=now, last_seen_at=now,
                  offer_expires_at=now + timedelta(minutes=30))
    fields.update(changes)
    return SessionPublic(**fields)


@dataclass
class Key:
    fingerprint: str


class FakeClient:
    """Stands in for HelplineClient where only listings are read."""

    def __init__(self, found: list[SessionPublic] = (), keys: list[str] = ()):
        self.found = list(found)
        self.keys = [Key(k) for k in keys]
        self.asked: list[dict] = []

    def sessions(self, ticket=None, state=None):
        self.asked.append({"ticket": ticket, "state": state})
        return [s for s in self.found if ticket is None or s.ticket == ticket]

    def session(self, session_id):
        for s in self.found:
            if s.id == session_id:
                return s
        raise NotFoundError("no such session")

    def ssh_keys(self):
        return self.keys


@pytest.fixture(autouse=True)
def private_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPLINE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


# --- finding the session ---------------------------------------------------------------------------------


def test_a_ticket_with_one_waiting_session_names_it():
    waiting = session()
    client = FakeClient([waiting, session(SessionState.ENDED)])
    assert connect.find_session(client, "t-1042", wanted=(SessionState.WAITING,)) == waiting
    assert client.asked == [{"ticket": "T-1042", "state": None}]


def test_a_ticket_with_two_waiting_sessions_is_ambiguous():
    client = FakeClient([session(hostname="laptop-7"), session(hostname="desk-2")])
    with pytest.raises(AmbiguousError) as raised:
        connect.find_session(client, "1042", wanted=(SessionState.WAITING,), what="waiting")
    assert "laptop-7" in raised.value.message and "desk-2" in raised.value.message
    assert raised.value.status == ExitStatus.AMBIGUOUS


def test_a_ticket_without_a_waiting_session_says_what_to_do():
    with pytest.raises(NotFoundError) as raised:
        connect.find_session(FakeClient([session(SessionState.ENDED)]), "T-1042", wanted=(SessionState.WAITING,), what="waiting")
    assert raised.value.message == "No waiting session on T-1042."
    assert "helpline session" in raised.value.hint


def test_a_session_id_start_names_one_session():
    wanted, other = session(), session()
    client = FakeClient([wanted, other])
    assert connect.find_session(client, wanted.id[:8]) == wanted
    assert connect.find_session(client, wanted.id) == wanted


def test_a_reference_that_is_neither_ticket_nor_id_is_refused():
    with pytest.raises(InvalidInputError):
        connect.find_session(FakeClient(), "laptop-7; rm -rf /")


# --- the engineer's key --------------------------------------------------------------------------------------


def write_key(folder: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    line = key_line() + " eng@desk"
    (folder / name).write_text("private key stands here\n")
    (folder / f"{name}.pub").write_text(line + "\n")
    return folder / name, line


def test_the_key_given_is_used_when_it_is_registered(tmp_path):
    path, line = write_key(tmp_path / "keys")
    identity, got_line, fingerprint = connect.choose_key(FakeClient(keys=[openssh_fingerprint(line)]), path)
    assert (identity, got_line, fingerprint) == (path, line, openssh_fingerprint(line))
    # The .pub file names the same key.
    assert connect.choose_key(FakeClient(keys=[fingerprint]), path.with_name("id_ed25519.pub"))[0] == path


def test_a_key_that_is_not_registered_says_how_to_register_it(tmp_path):
    path, line = write_key(tmp_path / "keys")
    with pytest.raises(ConfigError) as raised:
        connect.choose_key(FakeClient(keys=[openssh_fingerprint(key_line())]), path)
    assert openssh_fingerprint(line) in raised.value.message and "not registered" in raised.value.message
    assert f"helpline ssh-key add {path}.pub" in raised.value.hint


def test_without_a_key_the_first_registered_default_key_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_key(tmp_path / ".ssh", "id_ed25519")
    rsa, rsa_line = write_key(tmp_path / ".ssh", "id_rsa")
    assert connect.choose_key(FakeClient(keys=[openssh_fingerprint(rsa_line)]), None)[0] == rsa
    with pytest.raises(ConfigError) as raised:
        connect.choose_key(FakeClient(keys=[]), None)
    assert "no SSH key registered" in raised.value.message


# --- the user's answer ------------------------------------------------------------------------------------------


def test_an_approved_grant_goes_on():
    approved = session(SessionState.APPROVED, grant_id="g1")
    assert connect.approved_or_raise(approved, "g1") is approved


@pytest.mark.parametrize(("state", "grant_id", "reason", "error", "words"), [
    (SessionState.ENDED, "g1", "refused: refused by the user", ForbiddenError, "The user refused the session (refused by the user)."),
    (SessionState.ENDED, "g1", "refused: timed out", ForbiddenError, "The user refused the session (timed out)."),
    (SessionState.REQUESTED, "g1", None, ConflictError, "did not answer in time"),
    (SessionState.ENDED, "g1", "the user did not answer in time", ConflictError, "did not answer in time"),
    (SessionState.ENDED, "g1", "the user stopped waiting", ConflictError, "ended before it was approved (the user stopped waiting)"),
    (SessionState.APPROVED, "g2", None, ConflictError, "Another request replaced yours"),
], ids=["refused", "refused-by-timeout", "expired", "expired-ended", "ended", "replaced"])
def test_anything_but_approval_is_one_line_and_a_status(state, grant_id, reason, error, words):
    with pytest.raises(error) as raised:
        connect.approved_or_raise(session(state, grant_id=grant_id, end_reason=reason), "g1")
    assert words in raised.value.message and "\n" not in raised.value.message


class GrantClient:
    """Stands in for HelplineClient while a grant is asked for: records the calls, and raises
    KeyboardInterrupt (a Ctrl-C) at the call named ``stop_at``."""

    def __init__(self, offered: SessionPublic, stop_at: str | None = None):
        self.offered = offered
        self.stop_at = stop_at
        self.calls: list[str] = []
        self.ended: list[str] = []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.stop_at:
            raise KeyboardInterrupt

    def request_grant(self, session_id, body):
        self._step("request_grant")
        asked = self.offered.model_copy(update={"state": SessionState.REQUESTED, "grant_id": "g1",
                                                "grant_expires_at": datetime.now(UTC) + timedelta(minutes=5)})
        return GrantIssued(session=asked, grant=SignedGrant(payload={"grant_id": "g1"}, signature="c2ln"),
                           host_key=key_line(), verification="012 345 678")

    def grant_status(self, session_id, grant_id, wait=0):
        self._step("grant_status")
        return self.offered.model_copy(update={"state": SessionState.APPROVED, "grant_id": grant_id})

    def engineer_end_session(self, session_id, body):
        self.ended.append(body.reason)
        return self.offered.model_copy(update={"state": SessionState.ENDED, "end_reason": body.reason})


@pytest.mark.parametrize("stop_at", ["request_grant", "note-1", "note-2", "note-3", "grant_status"])
def test_a_ctrl_c_anywhere_between_asking_and_the_answer_withdraws_the_request(monkeypatch, stop_at):
    offered = session()
    client = GrantClient(offered, stop_at)
    printed: list[str] = []

    def note(message):
        printed.append(message)
        client._step(f"note-{len(printed)}")

    monkeypatch.setattr(connect, "note", note)
    # A KeyboardInterrupt that got out would stop the test run itself: it is caught and failed on here.
    with pytest.raises((HelplineError, KeyboardInterrupt)) as raised:
        connect.request_and_wait(client, offered, openssh_fingerprint(key_line()), [Scope.VIEW], 30)
    assert isinstance(raised.value, HelplineError), f"the Ctrl-C at {stop_at} got out of request_and_wait"
    assert raised.value.status == ExitStatus.INTERRUPTED
    assert "withdrawn and nothing was opened" in raised.value.message
    assert client.ended == [connect.WITHDRAWN]


def test_an_answer_without_a_ctrl_c_withdraws_nothing(monkeypatch):
    offered = session()
    client = GrantClient(offered)
    monkeypatch.setattr(connect, "note", lambda message: None)
    issued, approved = connect.request_and_wait(client, offered, openssh_fingerprint(key_line()), [Scope.VIEW], 30)
    assert approved.state is SessionState.APPROVED and approved.grant_id == "g1"
    assert client.ended == [] and client.calls == ["request_grant", "grant_status"]


# --- ssh: the command line and the config -------------------------------------------------------------------------


def test_the_host_key_is_pinned_alone_under_the_alias(tmp_path):
    s = session()
    host_line = key_line()
    path = connect.pin_host_key(s.id, host_line + " comment from the PC")
    assert path.read_text() == f"{connect.host_alias(s.id)} {host_line}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(InvalidInputError):
        connect.pin_host_key(s.id, host_line + "\n@cert-authority * " + host_line)


def test_ssh_runs_through_the_relay_with_the_key_pinned_and_no_token(tmp_path):
    s = session(SessionState.APPROVED)
    known = connect.pin_host_key(s.id, key_line())
    argv = connect.ssh_argv(s, known, tmp_path / "id_ed25519", ["-L", "5900:localhost:5900", "uptime"])
    options = dict(argv[i + 1].split("=", 1) for i, word in enumerate(argv) if word == "-o")
    assert argv[0] == "ssh"
    assert options["StrictHostKeyChecking"] == "yes" and options["UserKnownHostsFile"] == str(known)
    assert options["HostKeyAlias"] == connect.host_alias(s.id) and options["GlobalKnownHostsFile"] == "/dev/null"
    assert options["IdentitiesOnly"] == "yes" and options["IdentityFile"] == str(tmp_path / "id_ed25519")
    assert options["ProxyCommand"].endswith(f" relay {s.id}")
    assert argv[-4:] == [connect.host_alias(s.id), "-L", "5900:localhost:5900", "uptime"]
    assert not any("token" in word.lower() or "bearer" in word.lower() for word in argv)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client")
def test_openssh_reads_the_printed_config_as_meant(tmp_path):
    s = session(SessionState.APPROVED)
    known = connect.pin_host_key(s.id, key_line())
    folder = tmp_path / "with space %d"
    folder.mkdir()
    config = tmp_path / "ssh_config"
    config.write_text(connect.ssh_config(s, known, folder / "id_ed25519"))
    done = subprocess.run(["ssh", "-G", "-F", str(config), connect.host_alias(s.id)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    resolved = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert resolved["stricthostkeychecking"] == "true"
    assert resolved["hostkeyalias"] == connect.host_alias(s.id)
    assert resolved["userknownhostsfile"] == str(known)
    # ssh -G shows the value before %-tokens are expanded: the space is kept and the % is escaped.
    assert resolved["identityfile"] == str(folder / "id_ed25519").replace("%", "%%")
    assert resolved["identitiesonly"] == "yes" and resolved["user"] == "dana"
    assert resolved["proxycommand"].endswith(f"relay {s.id}")
    assert "token" not in config.read_text().lower()


# --- the relay pump ---------------------------------------------------------------------------------------------


def test_the_bridge_pump_carries_both_directions_and_ends_the_relay_side_at_the_end_of_input():
    ours, relay_end = socket.socketpair()  # the relay client's bridge, as agent.relay_socket makes it
    up_read, up_write = os.pipe()
    down_read, down_write = os.pipe()
    os.write(up_write, b"SSH-2.0-OpenSSH\r\n")
    os.close(up_write)  # ssh closed its side
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(_read_all(down_read)))
    reader.start()
    from_ssh = bytearray()

    def relay() -> None:  # the relay client: sends the PC's bytes, reads until our end shuts, then closes
        relay_end.sendall(b"SSH-2.0-PC\r\n" + b"x" * 300_000)
        while chunk := relay_end.recv(65536):
            from_ssh.extend(chunk)
        relay_end.close()

    relay_thread = threading.Thread(target=relay)
    relay_thread.start()
    connect.pump_bridge(ours, up_read, down_write)
    os.close(down_write)
    reader.join(5)
    relay_thread.join(5)
    assert bytes(from_ssh) == b"SSH-2.0-OpenSSH\r\n"
    assert bytes(received) == b"SSH-2.0-PC\r\n" + b"x" * 300_000
    assert ours.fileno() == -1  # closed
    os.close(up_read)
    os.close(down_read)


class _Stream:
    """Notes which way the pump hands its descriptors to the relay client."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def splice_pipes(self, read_fd: int, write_fd: int) -> None:
        self.used.append("splice")

    def bridge_to_socket(self) -> socket.socket:
        self.used.append("bridge")
        ours, theirs = socket.socketpair()
        ours.close()  # the relay ended at once
        return theirs


@pytest.mark.skipif(os.name == "nt", reason="the loop splices pipes on POSIX only")
def test_the_pump_gives_ssh_s_pipes_to_the_relay_client_s_loop_and_files_or_sockets_to_the_bridge(tmp_path):
    up_read, up_write = os.pipe()
    down_read, down_write = os.pipe()
    piped = _Stream()
    connect.pump(piped, up_read, down_write)
    assert piped.used == ["splice"]
    os.close(up_write)
    with (tmp_path / "in").open("wb+") as source, (tmp_path / "out").open("wb") as sink:
        filed = _Stream()
        connect.pump(filed, source.fileno(), sink.fileno())
    assert filed.used == ["bridge"]
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.shutdown(socket.SHUT_WR)
        socketed = _Stream()
        connect.pump(socketed, ours.fileno(), ours.fileno())
    assert socketed.used == ["bridge"]
    for fd in (up_read, down_read, down_write):
        os.close(fd)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


# --- recordings -----------------------------------------------------------------------------------------------


def test_terminal_output_is_made_readable():
    shown = connect.readable("\x1b]0;owned\x07\x1b[2J\x1b[31mred\x1b[0m text\r\nnext\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\x07\x9b")
    assert shown == "red text\nnextlink\\x07\\x9b"


def test_play_shows_output_events_only_and_refuses_other_files(tmp_path):
    cast = tmp_path / "s.cast"
    cast.write_text("\n".join([json.dumps({"version": 2, "width": 80, "height": 24}),
                               json.dumps([0.1, "o", "$ echo hi\r\n"]), json.dumps([0.2, "i", "secret\r"]),
                               json.dumps([0.3, "o", "hi\r\n\x1b[?1049h"])]) + "\n")
    written: list[str] = []
    assert connect.play(cast, 0, written.append) == 2
    assert "".join(written) == "$ echo hi\nhi\n"
    (tmp_path / "other.cast").write_text("not a recording\n")
    with pytest.raises(InvalidInputError):
        connect.play(tmp_path / "other.cast", 0, written.append)
