"""Remote sessions end to end: the user's `helpline session` on a real terminal, the engineer's
`helpline connect` with the real OpenSSH `ssh` and `sftp` through the real relay of a server on
loopback. What is approved works; what is refused, out of scope or with the wrong key gets nothing;
the end key and the time limit end the session and leave no process behind; the recording plays back."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pexpect
import pytest

from tests.support.live import helpline_bin
from tests.support.sessions import (
    EngineerRun,
    UserTerminal,
    cast_output,
    pid_gone,
    printed_config,
    save_config,
    ssh_keygen,
    tool,
)

from protocol.identifiers import short_ids
from protocol.sessions import TIME_UP_REASON

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.name == "nt", reason="sessions run on Linux and macOS PCs"),
    pytest.mark.skipif(shutil.which("ssh") is None or shutil.which("sftp") is None,
                       reason="tests/run.sh installs the OpenSSH client"),
]


@pytest.fixture
def runs():
    started: list[EngineerRun] = []
    yield started
    for run in started:
        run.stop()


def offer(desk, terminals) -> UserTerminal:
    terminal = UserTerminal(desk)
    terminals.append(terminal)
    return terminal


def test_an_approved_session_runs_a_command_and_its_recording_plays_back(desk, terminals, runs):
    user = offer(desk, terminals)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--",
                      "-o", "BatchMode=yes", "echo hello-from-$(hostname -s); sleep 1; exit 3")
    runs.append(run)
    prompt = user.asked()
    assert b"alice" in prompt.lower() and desk.ticket.encode() in prompt  # who asks and for which ticket
    user.child.sendline(b"yes")
    status, out, err = run.finish()
    assert status == 3, err
    assert out.decode().strip() == f"hello-from-{socket.gethostname().split('.')[0]}"
    assert b"verification:" in err  # the engineer saw the digits to read out
    digits = b" ".join(err.split(b"verification:")[1].split()[:3])
    assert len(digits) == 11
    shown = user.finished()
    assert digits in shown  # the user's screen showed the same digits once the key authenticated
    session = desk.wait_for_state(user.session_id, "ended")
    assert session["bytes_to_pc"] > 0 and session["bytes_from_pc"] > 0

    # The recording is attached to the ticket and plays back what the shell showed, made readable.
    deadline = time.monotonic() + 30
    while not desk.session(user.session_id)["recording"] and time.monotonic() < deadline:
        time.sleep(0.3)
    saved = desk.tmp / "session.cast"
    desk.engineer.ok("recording", user.session_id, "--output", str(saved))
    assert "hello-from-" in cast_output(saved)
    played = desk.engineer.ok("recording", short_ids([user.session_id])[user.session_id], "--output", str(desk.tmp / "again.cast"),
                              "--play", "--speed", "0")
    assert "hello-from-" in played.stdout and "\x1b" not in played.stdout


def test_sftp_moves_a_file_under_the_files_scope(desk, terminals, runs):
    user = offer(desk, terminals)
    config_path, alias, run = printed_config(desk, user.session_id, "files")
    runs.append(run)
    user.approve()
    config = save_config(run, config_path)
    text = config.read_text()
    assert "token" not in text.lower() and f"relay {user.session_id}" in text and "StrictHostKeyChecking yes" in text

    payload = os.urandom(3 * 1024 * 1024 + 7)
    (desk.tmp / "up.bin").write_bytes(payload)
    remote = desk.tmp / "pc-side"
    remote.mkdir()
    batch = desk.tmp / "batch"
    batch.write_text(f"put {desk.tmp / 'up.bin'} {remote / 'on-pc.bin'}\nget {remote / 'on-pc.bin'} {desk.tmp / 'down.bin'}\n")
    done = tool(desk, ["sftp", "-F", str(config), "-b", str(batch), alias])
    assert done.returncode == 0, done.stderr
    assert (remote / "on-pc.bin").read_bytes() == payload
    assert (desk.tmp / "down.bin").read_bytes() == payload


def test_a_refusal_opens_nothing(desk, terminals, runs):
    user = offer(desk, terminals)
    marker = desk.tmp / "should-not-exist"
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--", f"touch {marker}")
    runs.append(run)
    user.refuse()
    status, out, err = run.finish()
    assert status == 5, err
    assert b"The user refused the session" in err and out == b""
    assert not marker.exists()
    user.finished()
    assert desk.wait_for_state(user.session_id, "ended")["end_reason"].startswith("refused")


def test_a_ticket_the_pc_offers_nothing_on_gets_nothing(desk, terminals):
    offer(desk, terminals)
    other = desk.engineer.ok("ticket", "create", "Another ticket", "--json").json()["number"]
    done = desk.engineer.run("connect", other, "--key", str(desk.key))
    assert done.code == 6 and f"No waiting session on {other}" in done.stderr
    assert [s["state"] for s in desk.sessions()] == ["waiting"]  # nobody asked the user anything


def test_an_unregistered_key_is_refused_before_anyone_is_asked(desk, terminals):
    user = offer(desk, terminals)
    stranger = ssh_keygen(desk.tmp / "stranger")
    done = desk.engineer.run("connect", user.session_id, "--key", str(stranger))
    assert done.code == 3 and "is not registered to your account" in done.stderr
    assert f"helpline ssh-key add {stranger}.pub" in done.stderr
    assert desk.session(user.session_id)["state"] == "waiting"


def test_a_key_the_grant_does_not_name_is_denied(desk, terminals, runs):
    other = ssh_keygen(desk.tmp / "other")
    desk.engineer.ok("ssh-key", "add", f"{other}.pub")  # registered, but not the key this grant names
    user = offer(desk, terminals)
    config_path, alias, run = printed_config(desk, user.session_id, "control")
    runs.append(run)
    user.approve()
    config = save_config(run, config_path)
    config.write_text(config.read_text().replace(str(desk.key), str(other)))
    marker = desk.tmp / "should-not-exist"
    done = tool(desk, ["ssh", "-F", str(config), "-o", "BatchMode=yes", alias, f"touch {marker}"])
    assert done.returncode == 255 and b"Permission denied (publickey)" in done.stderr
    assert not marker.exists()


def test_view_only_cannot_run_commands_or_type(desk, terminals, runs):
    user = offer(desk, terminals)
    marker = desk.tmp / "typed"
    run = EngineerRun(desk, desk.ticket, "--key", str(desk.key), "--", "-tt", stdin=subprocess.PIPE)
    runs.append(run)
    user.approve()
    user.child.expect(b"is connected")  # the engineer's key authenticated and the shell started
    run.process.stdin.write(f"touch {marker}\n".encode())
    run.process.stdin.flush()
    user.child.sendline(b"echo typed-by-the-user")
    run.read_until(b"typed-by-the-user")  # the engineer sees the shell
    time.sleep(1.0)  # the engineer's keystrokes had every chance to arrive
    assert not marker.exists()
    user.end_key()
    run.finish()
    user.finished()

    # An exec request is refused in view scope.
    user = offer(desk, terminals)
    run = EngineerRun(desk, user.session_id, "--key", str(desk.key), "--", "-o", "BatchMode=yes", f"touch {marker}")
    runs.append(run)
    user.approve()
    status, _, _ = run.finish()
    assert status != 0 and not marker.exists()


def test_sftp_without_the_files_scope_gets_nothing(desk, terminals, runs):
    user = offer(desk, terminals)
    config_path, alias, run = printed_config(desk, user.session_id, "control")
    runs.append(run)
    user.approve()
    config = save_config(run, config_path)
    (desk.tmp / "secret.txt").write_text("the user's file\n")
    batch = desk.tmp / "batch"
    batch.write_text(f"get {desk.tmp / 'secret.txt'} {desk.tmp / 'stolen.txt'}\n")
    done = tool(desk, ["sftp", "-F", str(config), "-b", str(batch), alias])
    assert done.returncode != 0
    assert not (desk.tmp / "stolen.txt").exists()


@pytest.mark.parametrize("scopes, passes", [(("control",), False), (("control", "forward"), True)],
                         ids=["without-forward", "with-forward"])
def test_a_port_forward_needs_the_forward_scope(desk, terminals, runs, scopes, passes):
    service = socket.create_server(("127.0.0.1", 0))  # a service on the PC's loopback
    service.settimeout(2 * STEP_SECONDS)

    def answer() -> None:
        try:
            conn, _ = service.accept()
            with conn:
                if conn.recv(16) == b"ping":
                    conn.sendall(b"pong")
        except OSError:
            pass

    user = offer(desk, terminals)
    config_path, alias, run = printed_config(desk, user.session_id, *scopes)
    runs.append(run)
    user.approve()
    config = save_config(run, config_path)
    threading.Thread(target=answer, daemon=True).start()
    local = socket.create_server(("127.0.0.1", 0))
    local_port = local.getsockname()[1]
    local.close()
    target = service.getsockname()[1]
    ssh = EngineerProcess(desk, ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                                 "-L", f"{local_port}:127.0.0.1:{target}", alias, "sleep 20"])
    try:
        got = b""
        deadline = time.monotonic() + STEP_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", local_port), timeout=5) as conn:
                    conn.sendall(b"ping")
                    got = conn.recv(16)
                break
            except ConnectionRefusedError:  # ssh is not listening yet
                time.sleep(0.2)
            except OSError:
                break
        assert (got == b"pong") is passes
    finally:
        ssh.stop()
        service.close()


STEP_SECONDS = 30


class EngineerProcess:
    """A plain OpenSSH tool left running in the background as the engineer."""

    def __init__(self, desk, argv):
        self.process = subprocess.Popen(argv, env=desk.engineer.env(), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(10)


def engineer_processes(desk) -> list[tuple[bytes, bytes]]:
    """(command line, environment) of every process running with the engineer's Helpline config."""
    marker = f"HELPLINE_CONFIG_DIR={desk.engineer.config_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append((cmdline, environ))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads other processes' command lines from /proc")
def test_the_end_key_ends_the_session_and_every_process_it_started(desk, terminals, runs):
    user = offer(desk, terminals)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--",
                      "-o", "BatchMode=yes", "sleep 600 & echo PIDS=$$,$!; wait")
    runs.append(run)
    user.approve()
    line = run.read_until(b"\n").split(b"PIDS=")[1].split(b"\n")[0]
    pids = [int(p) for p in line.decode().strip().split(",")]
    # The engineer's ssh and its ProxyCommand carry no relay pass in their arguments or environment.
    engineer_side = engineer_processes(desk)
    assert any(b"relay" in cmdline and user.session_id.encode() in cmdline for cmdline, _ in engineer_side)
    assert not any(b"hlr_" in cmdline or b"hlr_" in environ for cmdline, environ in engineer_side)
    user.end_key()
    status, _, _ = run.finish(timeout=30)
    assert status != 0
    assert all(pid_gone(pid) for pid in pids), pids
    user.finished()
    ended = desk.wait_for_state(user.session_id, "ended")
    assert ended["end_reason"]


def test_the_time_limit_ends_the_session_and_every_process_it_started(desk, terminals, runs):
    user = offer(desk, terminals)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--minutes", "1", "--key", str(desk.key), "--",
                      "-o", "BatchMode=yes", "sleep 600 & echo PIDS=$$,$!; wait")
    runs.append(run)
    user.approve()
    line = run.read_until(b"\n").split(b"PIDS=")[1].split(b"\n")[0]
    pids = [int(p) for p in line.decode().strip().split(",")]
    status, _, _ = run.finish(timeout=120)
    assert status != 0
    assert all(pid_gone(pid) for pid in pids), pids
    assert b"maximum duration" in user.finished()  # the user is told why it ended
    # The server, the ticket and the audit say why too, not merely that a side left the relay.
    assert desk.wait_for_state(user.session_id, "ended")["end_reason"] == TIME_UP_REASON


def test_engineer_and_user_chat_without_typing_into_the_shell(desk, terminals, runs):
    user = offer(desk, terminals)
    run = EngineerRun(desk, desk.ticket, "--scope", "control", "--key", str(desk.key), "--",
                      "-o", "BatchMode=yes", "echo connected; sleep 600")
    runs.append(run)
    user.approve()
    run.read_until(b"connected")
    sent = desk.engineer.ok("chat", short_ids([user.session_id])[user.session_id], "I am checking the printer queue")
    assert "Sent to" in sent.stdout
    user.child.expect(b"I am checking the printer queue")

    follower = subprocess.Popen([helpline_bin(), "chat", desk.ticket], env=desk.engineer.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        user.child.send(b"\x14")  # Ctrl-T: a line to the engineer
        user.child.send(b"thanks, it is the red one\r")
        seen = b""
        deadline = time.monotonic() + STEP_SECONDS
        while b"it is the red one" not in seen and time.monotonic() < deadline:
            if select.select([follower.stdout], [], [], 0.5)[0]:
                seen += os.read(follower.stdout.fileno(), 65536)
        assert b"(user): thanks, it is the red one" in seen, seen
        assert b"you: I am checking the printer queue" in seen
        user.end_key()
        out, _ = follower.communicate(timeout=60)  # its long-poll (at most 25 s) ends, then it sees the end
        assert follower.returncode == 0 and b"The session has ended" in seen + out
    finally:
        if follower.poll() is None:
            os.killpg(follower.pid, signal.SIGKILL)
            follower.wait(10)
    user.finished()


def test_ctrl_c_while_waiting_withdraws_the_request(desk, terminals):
    user = offer(desk, terminals)
    env = desk.engineer.env()
    env["TERM"] = "xterm-256color"
    engineer = pexpect.spawn(helpline_bin(), ["connect", desk.ticket, "--scope", "control", "--key", str(desk.key)],
                             env=env, timeout=STEP_SECONDS, dimensions=(40, 160))
    try:
        engineer.expect("Waiting for the user to approve")
        user.asked()
        engineer.sendintr()
        engineer.expect("the request was withdrawn and nothing was opened")
        engineer.expect(pexpect.EOF)
        engineer.close()
        assert engineer.exitstatus == 130
    finally:
        if engineer.isalive():
            engineer.terminate(force=True)
    ended = desk.wait_for_state(user.session_id, "ended")
    assert ended["end_reason"] == "the engineer withdrew the request"
    user.child.sendline(b"yes")  # a late yes opens nothing
    assert b"is connected" not in user.finished()
