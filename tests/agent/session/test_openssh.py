"""The session host with the real OpenSSH client on a loopback port: the host key pinned (no first-use prompt),
a command under the control scope, and sftp under the files scope."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.session.host import SessionHost
from tests.agent.session.conftest import EngineerKey, make_engineer_key

pytestmark = [
    pytest.mark.skipif(os.name == "nt", reason="sessions run on POSIX PCs"),
    pytest.mark.skipif(shutil.which("ssh") is None, reason="tests/run.sh installs the OpenSSH client"),
]


@contextmanager
def listening(host: SessionHost, transports: list | None = None) -> Iterator[int]:
    """Serve ``host`` on a loopback TCP port until the block ends; yield the port."""
    transports = [] if transports is None else transports
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            transports.append(host.serve(conn))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        host.end("the test is over")


def _options(tmp_path: Path, engineer: EngineerKey, host: SessionHost, port: int) -> list[str]:
    known = tmp_path / "known_hosts"
    known.write_text(host.known_hosts_line("127.0.0.1", port) + "\n")
    return [
        "-F", "/dev/null",
        "-i", str(engineer.write(tmp_path)),
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known}",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5",
    ]


def _host(make_grant, host_key, scopes) -> SessionHost:
    grant = make_grant(scopes=scopes)
    host = SessionHost(grant, host_key=host_key, shell=["/bin/sh"], grace=0.3)
    host.give_consent(grant.grant_id)
    return host


def test_openssh_runs_a_command_under_control(tmp_path, make_grant, host_key, engineer):
    host = _host(make_grant, host_key, {"control"})
    transports: list = []
    with listening(host, transports) as port:
        done = subprocess.run(
            ["ssh", *_options(tmp_path, engineer, host, port), "-p", str(port), "ana@127.0.0.1", "echo hi; exit 4"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=8,
        )
    assert done.stdout == b"hi\n", done.stderr
    assert done.returncode == 4
    assert transports[0].remote_cipher == "aes128-gcm@openssh.com"


def test_openssh_refuses_a_host_key_other_than_the_pinned_one(tmp_path, make_grant, host_key, engineer):
    host = _host(make_grant, host_key, {"control"})
    with listening(host) as port:
        options = _options(tmp_path, engineer, host, port)
        (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{port} {engineer.line}\n")  # another key pinned
        done = subprocess.run(
            ["ssh", *options, "-p", str(port), "127.0.0.1", "echo hi"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=8,
        )
    assert done.returncode == 255 and b"hi" not in done.stdout
    assert b"HOST IDENTIFICATION HAS CHANGED" in done.stderr or b"Host key verification failed" in done.stderr


def test_openssh_sftp_moves_files_under_the_files_scope(tmp_path, make_grant, host_key, engineer):
    payload = os.urandom(2 * 1024 * 1024 + 5)
    (tmp_path / "up.bin").write_bytes(payload)
    remote = tmp_path / "remote"
    remote.mkdir()
    batch = tmp_path / "batch"
    batch.write_text(f"put {tmp_path / 'up.bin'} {remote / 'on-pc.bin'}\nget {remote / 'on-pc.bin'} {tmp_path / 'down.bin'}\nls {remote}\n")
    host = _host(make_grant, host_key, {"files"})
    with listening(host) as port:
        done = subprocess.run(
            ["sftp", *_options(tmp_path, engineer, host, port), "-P", str(port), "-b", str(batch), "127.0.0.1"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=8,
        )
    assert done.returncode == 0, done.stderr
    assert (remote / "on-pc.bin").read_bytes() == payload
    assert (tmp_path / "down.bin").read_bytes() == payload


def test_openssh_sftp_is_refused_without_the_files_scope(tmp_path, make_grant, host_key, engineer):
    (tmp_path / "batch").write_text("ls /\n")
    host = _host(make_grant, host_key, {"control"})
    with listening(host) as port:
        done = subprocess.run(
            ["sftp", *_options(tmp_path, engineer, host, port), "-P", str(port), "-b", str(tmp_path / "batch"), "127.0.0.1"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=8,
        )
    assert done.returncode != 0
    assert b"subsystem request failed" in done.stderr.lower() or b"connection closed" in done.stderr.lower()


def test_openssh_with_a_key_the_grant_does_not_name_is_denied(tmp_path, make_grant, host_key, engineer):
    host = _host(make_grant, host_key, {"control"})
    stranger = make_engineer_key()
    (tmp_path / "stranger").mkdir()
    with listening(host) as port:
        options = _options(tmp_path, engineer, host, port)
        options[options.index("-i") + 1] = str(stranger.write(tmp_path / "stranger"))
        done = subprocess.run(
            ["ssh", *options, "-p", str(port), "127.0.0.1", "echo hi"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=8,
        )
    assert done.returncode == 255 and b"hi" not in done.stdout
    assert b"Permission denied (publickey)" in done.stderr


@pytest.mark.parametrize("scope, reaches", [("control", True), ("view", False)])
def test_openssh_keystrokes_reach_the_shell_only_under_control(tmp_path, make_grant, host_key, engineer, scope, reaches):
    marker = tmp_path / "typed"
    host = _host(make_grant, host_key, {scope})
    with listening(host) as port:
        ssh = subprocess.Popen(
            ["ssh", *_options(tmp_path, engineer, host, port), "-tt", "-p", str(port), "127.0.0.1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            ssh.stdin.write(f"touch {marker}\n".encode())
            ssh.stdin.flush()
            until = time.monotonic() + (5 if reaches else 1)
            while time.monotonic() < until and not marker.exists():
                time.sleep(0.05)
            host.user_input(b"echo user-was-here\n")
            time.sleep(0.2)
            host.end("the user pressed the end key")
            out, _ = ssh.communicate(timeout=5)
        finally:
            if ssh.poll() is None:
                ssh.kill()
                ssh.wait(5)
    assert marker.exists() is reaches
    assert b"user-was-here" in out  # the engineer sees the shell either way
