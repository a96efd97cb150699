"""The session host over an in-process socket pair with a paramiko client: deny by default, open only what
the consented grant's scopes name, and end with the shell and everything it started."""

from __future__ import annotations

import os
import pwd
import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import paramiko
import pytest

from agent.session.files import SFTP_SERVERS, find_sftp_server, sftp_server_argv
from agent.session.host import SessionHost, loopback_target
from agent.session.recording import Recording, read_cast
from protocol.errors import ForbiddenError
from protocol.grants import verification_string
from tests.agent.session.conftest import make_engineer_key, read_until

pytestmark = pytest.mark.skipif(os.name == "nt", reason="sessions run on POSIX PCs")


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone for our purpose once /proc says so.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


def _wait_for(predicate, within: float = 3.0) -> bool:
    until = time.monotonic() + within
    while time.monotonic() < until:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_the_engineer_key_with_consent_runs_commands_in_the_shell(connect, make_grant, engineer):
    shown: list[tuple[str, str]] = []
    grant = make_grant(scopes={"control"})
    link = connect(grant, on_authenticated=lambda words, user: shown.append((words, user)))
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"echo result=$((6*7))\n")
    assert "result=42" in read_until(channel, "result=42")
    channel.sendall(b"stty size\n")
    read_until(channel, "30 100")
    channel.resize_pty(120, 40)
    channel.sendall(b"stty size\n")
    read_until(channel, "40 120")
    assert _wait_for(lambda: shown)
    assert shown == [(verification_string(grant, engineer.line), "ana")]


def test_another_key_is_refused(connect, make_grant):
    link = connect(make_grant())
    with pytest.raises(paramiko.AuthenticationException):
        link.login(make_engineer_key().pkey)


def test_after_six_refused_keys_even_the_right_one_is_refused(connect, make_grant, engineer):
    link = connect(make_grant())
    for _ in range(6):
        with pytest.raises(paramiko.AuthenticationException):
            link.login(make_engineer_key().pkey)
    with pytest.raises(paramiko.AuthenticationException):
        link.login(engineer.pkey)
    fresh = connect(make_grant())
    fresh.login(engineer.pkey)  # a new connection starts counting again
    assert fresh.client.is_authenticated()


def test_no_consent_no_entry(connect, make_grant, engineer):
    link = connect(make_grant(), consent=False)
    with pytest.raises(paramiko.AuthenticationException):
        link.login(engineer.pkey)
    with pytest.raises(ForbiddenError):
        link.host.give_consent("another-grant")  # consent to another grant opens nothing
    assert not link.host.consented


def test_passwords_and_none_are_not_methods(connect, make_grant):
    link = connect(make_grant())
    with pytest.raises(paramiko.BadAuthenticationType) as caught:
        link.client.auth_password("ana", "secret")
    assert caught.value.allowed_types == ["publickey"]


def test_a_grant_not_valid_yet_refuses_the_key(connect, make_grant, engineer):
    now = datetime.now(timezone.utc)
    link = connect(make_grant(not_before=now + timedelta(minutes=5), expires_at=now + timedelta(minutes=20)))
    with pytest.raises(paramiko.AuthenticationException):
        link.login(engineer.pkey)


def test_a_host_key_other_than_the_granted_one_is_refused(make_grant):
    with pytest.raises(ForbiddenError):
        SessionHost(make_grant())  # a fresh host key is not the one the grant names


def test_view_only_shows_output_but_drops_the_engineers_keys(connect, make_grant, engineer, tmp_path):
    marker = tmp_path / "typed-by-engineer"
    link = connect(make_grant(scopes={"view"}))
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(f"touch {marker}\n".encode())
    time.sleep(0.3)
    link.host.user_input(b"echo user=$((3*5))\n")  # the user may always type; the engineer sees it
    read_until(channel, "user=15")
    assert not marker.exists()
    with pytest.raises(paramiko.SSHException):  # exec needs control
        link.client.open_session(timeout=5).exec_command("id")


def test_taking_control_back_stops_input_at_once(connect, make_grant, engineer, tmp_path):
    marker = tmp_path / "after-revoke"
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"echo before=$((2*4))\n")
    read_until(channel, "before=8")
    link.host.revoke("control")
    channel.sendall(f"touch {marker}\n".encode())
    time.sleep(0.3)
    link.host.user_input(b"echo still=$((5*5))\n")
    read_until(channel, "still=25")
    assert not marker.exists()


def test_exec_runs_with_control_and_returns_the_exit_status(connect, make_grant, engineer):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    channel.exec_command("printf 'a\\nb\\n'; exit 3")
    channel.settimeout(5)
    output = b""
    while chunk := channel.recv(1024):
        output += chunk
    assert output == b"a\nb\n"  # no pty asked: bytes arrive unchanged
    assert channel.recv_exit_status() == 3


SFTP_SERVER = find_sftp_server()
SERVERS = [
    pytest.param(SFTP_SERVERS, id="openssh-sftp-server", marks=pytest.mark.skipif(SFTP_SERVER is None, reason="no sftp-server")),
    pytest.param((), id="python-server"),
]


def test_the_sftp_server_argv_is_pinned():
    assert sftp_server_argv("/usr/lib/openssh/sftp-server") == ["/usr/lib/openssh/sftp-server", "-e"]


def test_the_sftp_server_is_found_only_at_absolute_executable_paths(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    runnable = tmp_path / "runnable"
    runnable.write_text("#!/bin/sh\n")
    runnable.chmod(0o755)
    assert find_sftp_server(["sftp-server", str(tmp_path), str(plain), str(tmp_path / "missing")]) is None
    assert find_sftp_server(["runnable", str(plain), str(runnable)]) == str(runnable)
    assert SessionHost.__init__.__kwdefaults__["sftp_servers"] == SFTP_SERVERS
    assert all(os.path.isabs(path) for path in SFTP_SERVERS)


@pytest.mark.parametrize("servers", SERVERS)
def test_sftp_needs_the_files_scope(connect, make_grant, engineer, servers):
    link = connect(make_grant(scopes={"control"}), sftp_servers=servers)
    link.login(engineer.pkey)
    with pytest.raises(paramiko.SSHException):
        paramiko.SFTPClient.from_transport(link.client)
    assert link.host.sftp_server_pids == ()


@pytest.mark.parametrize("servers", SERVERS)
def test_sftp_moves_files_byte_identical_with_the_files_scope(connect, make_grant, engineer, tmp_path, servers):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "local.bin"
    local.write_bytes(payload)
    link = connect(make_grant(scopes={"files"}), sftp_servers=servers)
    link.login(engineer.pkey)
    sftp = paramiko.SFTPClient.from_transport(link.client)
    sftp.put(str(local), str(tmp_path / "uploaded.bin"))
    assert (tmp_path / "uploaded.bin").read_bytes() == payload
    sftp.get(str(tmp_path / "uploaded.bin"), str(tmp_path / "downloaded.bin"))
    assert (tmp_path / "downloaded.bin").read_bytes() == payload
    assert sorted(sftp.listdir(str(tmp_path))) == ["downloaded.bin", "local.bin", "uploaded.bin"]
    home = pwd.getpwuid(os.getuid()).pw_dir if servers else os.path.expanduser("~")
    assert os.path.realpath(sftp.normalize(".")) == os.path.realpath(home)  # relative paths start at the user's home
    children = link.host.sftp_server_pids
    assert len(children) == (1 if servers else 0)  # no binary listed: the Python server answers
    link.host.revoke("files")
    assert all(_pid_gone(pid) for pid in children)  # the child ended with the scope, before revoke returned
    with pytest.raises((OSError, EOFError, paramiko.SSHException)):  # the open sftp channel is closed...
        sftp.listdir(str(tmp_path))
    with pytest.raises(paramiko.SSHException):  # ...and a new one refused
        paramiko.SFTPClient.from_transport(link.client)
    assert link.host.sftp_server_pids == ()


@pytest.mark.skipif(SFTP_SERVER is None, reason="no sftp-server")
def test_the_sftp_server_child_ends_with_the_session(connect, make_grant, engineer, tmp_path):
    link = connect(make_grant(scopes={"view", "files"}))
    link.login(engineer.pkey)
    sftp = paramiko.SFTPClient.from_transport(link.client)
    sftp.listdir(str(tmp_path))
    (pid,) = link.host.sftp_server_pids
    assert not _pid_gone(pid)
    link.host.end("the user ended it")
    assert link.host.wait(10)
    assert _pid_gone(pid)


@pytest.mark.skipif(SFTP_SERVER is None, reason="no sftp-server")
def test_the_sftp_server_child_ends_when_the_engineer_closes_the_channel(connect, make_grant, engineer, tmp_path):
    link = connect(make_grant(scopes={"files"}))
    link.login(engineer.pkey)
    sftp = paramiko.SFTPClient.from_transport(link.client)
    sftp.listdir(str(tmp_path))
    (pid,) = link.host.sftp_server_pids
    sftp.close()
    assert _wait_for(lambda: _pid_gone(pid), within=10)
    assert not link.host.ended


def _asks(client: paramiko.Transport, kind: str, *fields: str | bool | int) -> bool:
    """Send one channel request that wants a reply on a fresh session channel; True if the host said yes."""
    channel = client.open_session(timeout=5)
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string(kind)
    message.add_boolean(True)
    for value in fields:
        if isinstance(value, bool):
            message.add_boolean(value)
        elif isinstance(value, int):
            message.add_int(value)
        else:
            message.add_string(value)
    channel._event_pending()
    client._send_user_message(message)
    try:
        channel._wait_for_event()
    except paramiko.SSHException:
        return False
    return True


def test_x11_agent_forwarding_env_exec_and_remote_forwards_are_refused(connect, make_grant, engineer):
    link = connect(make_grant(scopes={"view", "files", "forward"}))
    link.login(engineer.pkey)
    assert not _asks(link.client, "x11-req", False, "MIT-MAGIC-COOKIE-1", "00" * 16, 0)
    assert not _asks(link.client, "auth-agent-req@openssh.com")
    assert not _asks(link.client, "env", "LD_PRELOAD", "/tmp/evil.so")
    assert not _asks(link.client, "exec", "id")
    assert not _asks(link.client, "subsystem", "netconf")
    assert _asks(link.client, "pty-req", "xterm", 80, 24, 0, 0, "")  # the control: a request view allows
    with pytest.raises(paramiko.SSHException):
        link.client.request_port_forward("127.0.0.1", 0)
    with pytest.raises(paramiko.ChannelException):
        link.client.open_channel("x11", src_addr=("127.0.0.1", 6000), timeout=5)
    with pytest.raises(paramiko.ChannelException):
        link.client.open_channel("auth-agent@openssh.com", timeout=5)
    assert link.host.terminal is None  # nothing was started for any of it


@pytest.fixture
def echo_server():
    """A loopback TCP echo server (one connection), the target a forward reaches."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(5)


def test_forwards_need_the_scope_and_reach_loopback_only(connect, make_grant, engineer, echo_server):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    with pytest.raises(paramiko.ChannelException):
        link.client.open_channel("direct-tcpip", ("127.0.0.1", echo_server), ("127.0.0.1", 40000), timeout=5)

    link = connect(make_grant(scopes={"forward"}))
    link.login(engineer.pkey)
    for outside in (("10.255.255.1", 80), ("example.com", 443), ("0.0.0.0", echo_server)):
        with pytest.raises(paramiko.ChannelException) as caught:
            link.client.open_channel("direct-tcpip", outside, ("127.0.0.1", 40000), timeout=5)
        assert caught.value.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
    channel = link.client.open_channel("direct-tcpip", ("localhost", echo_server), ("127.0.0.1", 40000), timeout=5)
    channel.sendall(b"through the forward")
    channel.settimeout(5)
    assert channel.recv(1024) == b"through the forward"
    link.host.revoke("forward")
    assert _wait_for(lambda: channel.closed)  # the open forward is closed...
    with pytest.raises(paramiko.ChannelException):  # ...and a new one refused
        link.client.open_channel("direct-tcpip", ("127.0.0.1", echo_server), ("127.0.0.1", 40000), timeout=5)


def test_loopback_targets():
    assert loopback_target("127.0.0.1") == "127.0.0.1"
    assert loopback_target("127.9.9.9") == "127.9.9.9"
    assert loopback_target("::1") == "::1"
    assert loopback_target("LOCALHOST") == "127.0.0.1"
    for outside in ("0.0.0.0", "10.0.0.1", "example.com", "localhost.example.com", "::ffff:8.8.8.8"):
        assert loopback_target(outside) is None


def test_the_session_ends_at_its_maximum_duration_with_every_process_of_the_shell(connect, make_grant, engineer):
    ended: list[str] = []
    # The grant's window closes first: an engineer already in keeps the session up to the maximum duration.
    now = datetime.now(timezone.utc)
    link = connect(make_grant(expires_at=now + timedelta(seconds=1), max_duration_seconds=3), on_end=ended.append)
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"sleep 300 & echo job=$!; echo mark=$((1+1))\n")
    job = int(re.search(r"job=(\d+)", read_until(channel, "mark=2")).group(1))
    pgid = link.host.terminal.pgid
    assert not _gone(pgid)
    assert _wait_for(lambda: datetime.now(timezone.utc) > now + timedelta(seconds=1.5))
    assert not link.host.ended  # past the grant's window, within the maximum duration
    assert link.host.wait(6)
    assert _wait_for(lambda: _gone(pgid) and _pid_gone(job))
    assert _wait_for(lambda: not link.client.is_active())
    assert ended == ["the session reached its maximum duration"]


def test_a_session_nobody_joined_ends_when_the_grant_expires(connect, make_grant, engineer):
    ended: list[str] = []
    link = connect(make_grant(expires_at=datetime.now(timezone.utc) + timedelta(seconds=1)), on_end=ended.append)
    assert link.host.wait(5)
    assert ended == ["the session grant expired before the engineer connected"]
    with pytest.raises((paramiko.AuthenticationException, paramiko.SSHException, EOFError, OSError)):
        link.login(engineer.pkey)


def test_ending_the_session_or_exiting_the_shell_closes_everything(connect, make_grant, engineer):
    link = connect(make_grant())
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"echo up=$((1+1))\n")
    read_until(channel, "up=2")
    pgid = link.host.terminal.pgid
    link.host.end("the user pressed the end key")
    assert _wait_for(lambda: _gone(pgid))
    assert _wait_for(lambda: not link.client.is_active())
    assert link.host.end_reason == "the user pressed the end key"

    link = connect(make_grant())
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"sleep 300 & echo job=$!; echo mark=$((1+1))\n")
    job = int(re.search(r"job=(\d+)", read_until(channel, "mark=2")).group(1))
    channel.sendall(b"exit 0\n")  # the job in the background still holds the terminal open
    assert link.host.wait(5)
    assert link.host.end_reason == "the shell exited"
    assert _wait_for(lambda: _pid_gone(job))


def test_the_engineer_dropping_ends_the_shell(connect, make_grant, engineer):
    link = connect(make_grant())
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"echo up=$((1+1))\n")
    read_until(channel, "up=2")
    pgid = link.host.terminal.pgid
    link.client.sock.close()  # the relay or the engineer's side goes away
    assert link.host.wait(5)
    assert _wait_for(lambda: _gone(pgid))


def test_the_recording_plays_back_the_output(connect, make_grant, engineer, tmp_path):
    path = tmp_path / "session.cast"
    recording = Recording(path, width=100, height=30, env={"TERM": "xterm", "SHELL": "/bin/sh", "SECRET": "x"})
    link = connect(make_grant(), recording=recording)
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"echo rec=$((7*6))\n")
    read_until(channel, "rec=42")
    link.host.end()
    cast = read_cast(path)
    assert cast.header["width"] == 100 and cast.header["env"] == {"TERM": "xterm", "SHELL": "/bin/sh"}
    assert "rec=42" in cast.output()
    assert cast.input() == ""  # keystrokes are not kept unless asked
    assert [t for t, _, _ in cast.events] == sorted(t for t, _, _ in cast.events)


def test_the_engineer_closing_the_shell_channel_ends_the_session(connect, make_grant, engineer):
    link = connect(make_grant())
    link.login(engineer.pkey)
    channel = link.shell()
    channel.sendall(b"echo up=$((1+1))\n")
    read_until(channel, "up=2")
    pgid = link.host.terminal.pgid
    channel.close()
    assert link.host.wait(5)
    assert link.host.end_reason == "the engineer closed the shell"
    assert _wait_for(lambda: _gone(pgid))


def test_end_of_input_leaves_a_command_running_to_its_end(connect, make_grant, engineer):
    link = connect(make_grant())
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    channel.exec_command("sleep 0.3; echo finished")
    channel.shutdown_write()
    channel.settimeout(5)
    output = b""
    while chunk := channel.recv(1024):
        output += chunk
    assert output == b"finished\n"
    assert channel.recv_exit_status() == 0


def _drain(channel: paramiko.Channel) -> tuple[bytes, bytes]:
    """Everything the command wrote to its output and to its errors, until the channel's end (bounded by its timeout)."""
    channel.settimeout(5)
    output = errors = b""
    while chunk := channel.recv(65536):
        output += chunk
    while chunk := channel.recv_stderr(65536):
        errors += chunk
    return output, errors


def test_exec_without_a_pty_runs_on_pipes_with_errors_apart(connect, make_grant, engineer):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    channel.exec_command("test -t 0 || echo no-terminal; echo out=$((2*3)); echo err=$((3*3)) >&2; exit 5")
    output, errors = _drain(channel)
    assert output == b"no-terminal\nout=6\n"
    assert errors == b"err=9\n"
    assert channel.recv_exit_status() == 5


def test_exec_with_a_pty_request_still_gets_a_terminal(connect, make_grant, engineer):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    channel.get_pty("xterm", 90, 20)
    channel.exec_command("test -t 0 && echo terminal; echo err >&2")
    output, errors = _drain(channel)
    assert output.replace(b"\r\n", b"\n") == b"terminal\nerr\n"  # one stream, as in any terminal
    assert errors == b""
    assert channel.recv_exit_status() == 0


def test_the_end_of_input_reaches_the_command_and_bytes_pass_unchanged(connect, make_grant, engineer):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several reads and windows' worth, every byte value
    channel = link.client.open_session(timeout=5)
    channel.exec_command("cat; echo done >&2")
    received = bytearray()

    def collect() -> None:
        channel.settimeout(10)
        while chunk := channel.recv(1 << 20):
            received.extend(chunk)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    channel.sendall(payload)
    channel.shutdown_write()  # cat only ends when it reads end-of-file
    reader.join(15)
    assert not reader.is_alive()
    assert bytes(received) == payload
    assert channel.recv_stderr(100) == b"done\n"
    assert channel.recv_exit_status() == 0


def test_a_command_that_stops_reading_still_ends_with_its_status(connect, make_grant, engineer):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    channel.exec_command("head -c 10 > /dev/null; echo read-ten")
    try:
        channel.sendall(b"x" * (4 * 1024 * 1024))  # far more than the command takes
        channel.shutdown_write()
    except OSError:
        pass  # the command ended and the host closed the channel before all of it was sent
    output, _ = _drain(channel)
    assert output == b"read-ten\n"
    assert channel.recv_exit_status() == 0


def test_taking_control_back_stops_input_to_a_running_command(connect, make_grant, engineer, tmp_path):
    target = tmp_path / "written-by-command"
    link = connect(make_grant(scopes={"view", "control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    channel.exec_command(f"cat > {target}; echo closed")
    channel.sendall(b"before\n")
    assert _wait_for(lambda: target.exists() and target.read_bytes() == b"before\n")
    link.host.revoke("control")
    channel.sendall(b"after\n")
    channel.shutdown_write()
    output, _ = _drain(channel)
    assert output == b"closed\n"
    assert target.read_bytes() == b"before\n"
    assert channel.recv_exit_status() == 0


@pytest.mark.parametrize("ending", ["session-end", "channel-close"])
def test_a_piped_command_and_everything_it_started_end_with_the_session_or_its_channel(connect, make_grant, engineer, ending):
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    # A job in the background, one in its own process group that ignores the hangup, and the command itself.
    channel.exec_command("sleep 300 & echo job=$!; set -m; sh -c 'trap \"\" HUP; exec sleep 301' & echo deaf=$!; echo leader=$$; sleep 302")
    out = read_until(channel, "leader=")
    while not re.search(r"leader=\d+\n", out):
        out += read_until(channel, "\n")
    pids = [int(re.search(rf"{name}=(\d+)", out).group(1)) for name in ("job", "deaf", "leader")]
    assert not any(_pid_gone(pid) for pid in pids)
    if ending == "session-end":
        link.host.end("the user pressed the end key")
        assert link.host.wait(5)
    else:
        channel.close()
    assert _wait_for(lambda: all(_pid_gone(pid) for pid in pids), within=5)
    assert _wait_for(lambda: _gone(pids[2]), within=5)  # the command's own process group, zombies reaped too


def test_channels_advertise_the_window_openssh_s_server_does(connect, make_grant, engineer):
    """2 MiB, as sshd: a larger window makes the engineer's OpenSSH client buffer (and copy) that much ahead of us."""
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    assert channel.out_window_size == 2 * 1024 * 1024
    assert channel.out_max_packet_size == 128 * 1024
    channel.close()


@pytest.mark.parametrize("with_pty", [False, True])
def test_a_command_that_ends_at_once_is_answered_before_its_channel_closes(connect, make_grant, engineer,
                                                                          monkeypatch, with_pty):
    from paramiko.common import cMSG_CHANNEL_SUCCESS

    real = paramiko.Transport._send_user_message

    def slow_answers(transport, message):  # the exec's answer leaves late, as on a loaded PC
        if message.asbytes()[:1] == cMSG_CHANNEL_SUCCESS:
            time.sleep(0.3)
        return real(transport, message)

    monkeypatch.setattr(paramiko.Transport, "_send_user_message", slow_answers)
    link = connect(make_grant(scopes={"control"}))
    link.login(engineer.pkey)
    channel = link.client.open_session(timeout=5)
    if with_pty:
        channel.get_pty()
    channel.exec_command("exit 7")  # refused ("Channel closed") if the close overtook the answer
    assert channel.recv_exit_status() == 7
