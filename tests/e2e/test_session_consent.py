"""`helpline session` in a real terminal (a pty) against the real server and relay: the user sees only what
the server signed, nothing opens without a typed "yes", and the user's end key ends the session at once.

The engineer's side is played by the test with the typed client, the relay client and paramiko, so these
journeys need nothing of the engineer's `helpline connect`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from dataclasses import dataclass

import paramiko
import pexpect
import pytest

from agent.client import HelplineClient
from agent.relay_socket import open_relay
from agent.session.recording import read_cast
from protocol import signing
from protocol.errors import HelplineError
from protocol.grants import SessionGrant, sign_grant
from protocol.sessions import GrantIssued, GrantRequest, SessionPublic
from tests.agent.session.conftest import EngineerKey, make_engineer_key
from tests.support.live import PC, LiveServer, helpline_bin, token_of

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(os.name == "nt", reason="sessions run on POSIX PCs")]

HOSTILE_TITLE = "Printer \x1b]2;HACKED\x07\x1b[2J\x1b[31mbroken\u202e"


@dataclass
class Scene:
    server: LiveServer
    admin: PC
    user: PC
    ticket: str
    key: EngineerKey
    client: HelplineClient

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def scene(live_server, admin_pc, make_pc, tmp_path):
    number = admin_pc.ok("ticket", "create", "Printer broken", "--json").json()["number"]
    code = admin_pc.ok("ticket", "pair-code", number, "--json").json()["code"]
    user = make_pc("user")
    user.ok("pair", code, "--server", live_server.url)
    key = make_engineer_key()
    pub = tmp_path / "engineer.pub"
    pub.write_text(key.line + "\n")
    admin_pc.ok("ssh-key", "add", str(pub))
    made = Scene(live_server, admin_pc, user, number, key, HelplineClient.connect(live_server.url, token_of(admin_pc)))
    yield made
    made.close()


def spawn(pc: PC, *args: str) -> pexpect.spawn:
    env = pc.env()
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    return pexpect.spawn(helpline_bin(), ["session", *args], env=env, encoding="utf-8", timeout=60, dimensions=(40, 140),
                         codec_errors="replace")


def waiting_offer(scene: Scene, child: pexpect.spawn) -> SessionPublic:
    child.expect(f"Waiting for an engineer on ticket {scene.ticket}")
    for _ in range(100):  # bounded: the offer is made before the line is printed
        found = scene.client.sessions(ticket=scene.ticket, state="waiting")
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError("no waiting session offer")


def ask(scene: Scene, offer: SessionPublic, scopes=("control",), minutes: int = 5) -> GrantIssued:
    from protocol.grants import openssh_fingerprint

    body = GrantRequest(key_fingerprint=openssh_fingerprint(scene.key.line), scopes=list(scopes), max_minutes=minutes)
    return scene.client.request_grant(offer.id, body)


def engineer_shell(scene: Scene, issued: GrantIssued) -> tuple[paramiko.Transport, paramiko.Channel]:
    stream = open_relay(scene.client.engineer_relay_ticket(issued.session.id))
    transport = paramiko.Transport(stream.bridge_to_socket())
    transport.start_client(timeout=30)
    pinned = issued.host_key.split()
    assert transport.get_remote_server_key().get_base64() == pinned[1]
    transport.auth_publickey("engineer", scene.key.pkey)
    channel = transport.open_session(timeout=10)
    channel.get_pty("xterm", 100, 30)
    channel.invoke_shell()
    return transport, channel


def read_channel(channel: paramiko.Channel, marker: str, timeout: float = 20) -> str:
    seen, until = b"", time.monotonic() + timeout
    channel.settimeout(0.2)
    while marker.encode() not in seen:
        assert time.monotonic() < until, f"{marker!r} not seen: {seen[-300:]!r}"
        try:
            data = channel.recv(65536)
        except TimeoutError:
            continue
        assert data, f"channel closed before {marker!r}: {seen[-300:]!r}"
        seen += data
    return seen.decode("utf-8", "replace")


def gone(pid: int) -> bool:
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def settled(scene: Scene, session_id: str, state: str) -> SessionPublic:
    for _ in range(100):
        public = scene.client.session(session_id)
        if public.state == state:
            return public
        time.sleep(0.1)
    raise AssertionError(f"session {session_id} is {public.state}, not {state}")


@pytest.mark.parametrize("end_by", ["end-key", "hangup"])
def test_yes_lets_the_engineer_in_and_the_user_ends_it_at_once_with_the_recording_attached(scene, end_by):
    child = spawn(scene.user)
    offer = waiting_offer(scene, child)
    issued = ask(scene, offer, scopes=("control",), minutes=5)
    child.expect("An engineer asks to connect to this PC.")
    child.expect(r"Engineer: +root-admin \(account root-admin\)")
    child.expect(rf"Ticket: +{scene.ticket}")
    child.expect("type and run commands in your shell, as you")
    child.expect("For at most: +5 min")
    child.expect(r"Allow this session\? Type yes or no")
    child.sendline("yes")
    child.expect("Approved. Waiting for root-admin to connect.")
    child.expect("This session is recorded")
    transport, channel = engineer_shell(scene, issued)
    child.expect(f"Verification: {issued.verification}")  # shown once the engineer's key authenticated
    channel.sendall(b"sleep 300 & echo job=$!; echo seen-by-both-$((6*7))\n")
    job = int(re.search(r"job=(\d+)", read_channel(channel, "seen-by-both-42")).group(1))
    child.expect("seen-by-both-42")  # the user's terminal mirrors the shell
    child.expect("5 min left|4 min .* left")  # the banner: the time left
    if end_by == "end-key":
        child.send("\x1d")  # Ctrl-]: the user's end key
        child.expect(r"Session on .* ended \(the user ended the session\)")
    else:
        child.kill(signal.SIGHUP)  # the user closed the terminal window
        child.expect(r"Session on .* ended \(the user's terminal was closed\)")
    child.expect("the recording is attached to the ticket")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    for _ in range(100):
        if not transport.is_active():
            break
        time.sleep(0.1)
    assert not transport.is_active()  # the engineer learnt it within seconds
    assert gone(job)  # the shell and what it started ended with the session
    ended = settled(scene, offer.id, "ended")
    assert ended.recording and ended.bytes_to_pc > 0 and ended.bytes_from_pc > 0
    # The ticket's record says why, not merely that the PC left the relay.
    assert ended.end_reason == ("the user ended the session" if end_by == "end-key" else "the user's terminal was closed")
    dest = scene.server.data_dir.parent / "session.cast"
    scene.client.download_recording(offer.id, dest)
    assert "seen-by-both-42" in read_cast(dest).output()  # the recording plays back what the shell showed


@pytest.mark.parametrize("answer", ["no", "ctrl-c", "timeout", "eof"])
def test_anything_but_yes_refuses_and_opens_nothing(scene, answer):
    child = spawn(scene.user, *(["--answer-within", "3"] if answer == "timeout" else []))
    offer = waiting_offer(scene, child)
    issued = ask(scene, offer)
    child.expect(r"Allow this session\? Type yes or no")
    if answer == "no":
        child.sendline("no")
        child.expect("You refused the request. Nothing was opened")
    elif answer == "ctrl-c":
        child.sendintr()
        child.expect(r"Refused \(Ctrl-C\). Nothing was opened")
    elif answer == "eof":
        child.sendeof()
        child.expect("The input ended: the request was refused")
    else:
        child.expect("No answer in time: the request was refused")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == (130 if answer == "ctrl-c" else 0)
    with pytest.raises(HelplineError):
        scene.client.engineer_relay_ticket(issued.session.id)
    assert scene.client.session(offer.id).state != "active"


def test_a_hostile_ticket_title_is_labelled_and_shown_inert(scene):
    scene.admin.ok("ticket", "update", scene.ticket, "--title", HOSTILE_TITLE)
    child = spawn(scene.user)
    ask(scene, waiting_offer(scene, child))
    child.expect(r"Ticket title \(written by whoever opened the ticket\): ")
    child.expect(r"Allow this session\?")
    shown = child.before
    assert "\\x1b]2;HACKED\\x07\\x1b[2J\\x1b[31mbroken\\u202e" in shown
    assert "\x1b]2;HACKED" not in shown and "\x1b[2J" not in shown and "\u202e" not in shown
    child.sendline("no")
    child.expect(pexpect.EOF)
    child.close()


def test_a_forged_request_is_refused_without_a_prompt(scene):
    """A request planted in the server's database (signed by another key) never reaches the user."""
    child = spawn(scene.user)
    offer = waiting_offer(scene, child)
    forger = signing.generate_key()
    now = time.time()
    from datetime import datetime, timedelta, timezone

    from protocol.grants import openssh_fingerprint

    at = datetime.fromtimestamp(now, timezone.utc)
    grant = SessionGrant(
        grant_id="forged-grant", nonce="f" * 32, agent_id=offer.agent_id, host_key_fingerprint=offer.host_key_fingerprint,
        ticket=scene.ticket, engineer_username="root-admin", engineer_name="Root-Admin", organisation="IT Support",
        engineer_key=scene.key.line, engineer_key_fingerprint=openssh_fingerprint(scene.key.line),
        scopes={"control"}, not_before=at - timedelta(seconds=5), expires_at=at + timedelta(minutes=10),
        max_duration_seconds=600,
    )
    signed = sign_grant(forger, grant)
    plant_request(scene.server, offer.id, signed.model_dump(mode="json"))
    child.expect("A session request was refused without asking you: The session grant is not signed by this PC's server.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    assert "Allow this session" not in child.before


def plant_request(server: LiveServer, session_id: str, signed: dict) -> None:
    """Write a request event straight into the server's SQLite database, as a database compromise could."""
    db = sqlite3.connect(server.data_dir / "helpline.db", timeout=30)
    try:
        with db:
            seq, stamp = db.execute("SELECT event_seq, created_at FROM remote_sessions WHERE id = ?", (session_id,)).fetchone()
            details = {"grant": signed, "engineer_name": "Root-Admin", "engineer_username": "root-admin",
                       "ticket_title": "Printer broken"}
            db.execute("INSERT INTO session_events (session_id, seq, kind, at, details) VALUES (?, ?, 'request', ?, ?)",
                       (session_id, seq + 1, stamp, json.dumps(details)))
            db.execute("UPDATE remote_sessions SET event_seq = ? WHERE id = ?", (seq + 1, session_id))
    finally:
        db.close()


def test_chat_both_ways_taking_control_back_and_the_engineer_ending_it(scene):
    from protocol.sessions import ChatMessage, SessionEnd

    child = spawn(scene.user)
    offer = waiting_offer(scene, child)
    issued = ask(scene, offer, scopes=("control", "files"))
    child.expect(r"Allow this session\?")
    child.sendline("yes")
    child.expect("Approved")
    transport, channel = engineer_shell(scene, issued)
    child.expect(f"Verification: {issued.verification}")
    # The engineer's message shows in the user's banner, made printable.
    scene.client.post_session_chat(offer.id, ChatMessage(text="Checking the spooler now"))
    child.expect("root-admin: Checking the spooler now")
    # The user's message goes to the engineer, not into the shell.
    child.send("\x14")  # Ctrl-T
    child.expect("Message to root-admin")
    child.send("thanks, go ahead\r")
    for _ in range(100):
        said = [e for e in scene.client.session_chat(offer.id) if e.sender == "user"]
        if said:
            break
        time.sleep(0.1)
    assert [e.text for e in said] == ["thanks, go ahead"]
    # With control the engineer types; after the user takes it back, the engineer's keys are dropped
    # while the user's own still reach the shell.
    channel.sendall(b"echo engineer-$((1+1))\n")
    read_channel(channel, "engineer-2")
    child.send("\x0f")  # Ctrl-O
    child.expect(r"Take back: \[c\] control  \[f\] files")
    child.send("c")
    child.expect("You took back 'control'. The engineer keeps: view\\+files.")
    for _ in range(100):
        if scene.client.session(offer.id).scopes == ["files", "view"]:
            break
        time.sleep(0.1)
    assert sorted(scene.client.session(offer.id).scopes) == ["files", "view"]
    channel.sendall(b"echo engineer-typed-$((2+2))\n")
    child.send("echo user-typed-$((3+3))\r")
    seen_by_engineer = read_channel(channel, "user-typed-6")  # the engineer still sees the shell
    child.expect("user-typed-6")
    assert "engineer-typed" not in child.before and "engineer-typed" not in seen_by_engineer
    # The engineer ends it: the user's side ends too, and says so.
    scene.client.engineer_end_session(offer.id, SessionEnd(reason="the engineer ended the session"))
    child.expect(r"Session on .* ended \(the engineer")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_share_session_sends_then_waits_for_the_engineer(scene):
    env = scene.user.env()
    env["TERM"] = "xterm-256color"
    child = pexpect.spawn(helpline_bin(), ["share", "--ticket", scene.ticket, "--what", "printer", "--since", "today",
                                           "--tried", "nothing", "--yes", "--deadline", "5", "--session"],
                          env=env, encoding="utf-8", timeout=90, dimensions=(40, 140), codec_errors="replace")
    child.expect("your diagnostics were delivered")
    offer = waiting_offer(scene, child)
    assert offer.ticket == scene.ticket
    child.sendintr()  # stop waiting: the offer is withdrawn
    child.expect("Stopped waiting. No session was opened.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert settled(scene, offer.id, "ended").end_reason == "the user stopped waiting"
