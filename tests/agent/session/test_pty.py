"""The user's shell in a PTY: a login shell, sizes, raw bytes, a clean environment, and an end that leaves no process."""

from __future__ import annotations

import os
import pwd
import re
import time

import pytest

from agent.session import pty as session_pty
from agent.session.pty import login_shell, shell_environment, start_terminal
from protocol.errors import HelplineError

pytestmark = pytest.mark.skipif(os.name == "nt", reason="sessions run on POSIX PCs")


def read_until(terminal, marker: bytes, timeout: float = 5.0) -> bytes:
    seen = b""
    until = time.monotonic() + timeout
    os.set_blocking(terminal.master, False)
    while marker not in seen:
        assert time.monotonic() < until, f"{marker!r} not seen; got {seen[-300:]!r}"
        try:
            data = os.read(terminal.master, 65536)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        except OSError:
            break
        if not data:
            break
        seen += data
    assert marker in seen, f"{marker!r} not seen; got {seen[-300:]!r}"
    return seen


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return not fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.fixture
def terminals():
    started = []
    yield started
    for terminal in started:
        terminal.end(0.2)


def test_the_login_shell_comes_from_the_password_database():
    assert login_shell() == pwd.getpwuid(os.getuid()).pw_shell


def test_the_default_is_a_login_shell_as_the_user(terminals):
    terminal = start_terminal()
    terminals.append(terminal)
    terminal.write(b"echo zero=$0 user=$(id -u) home=$HOME\n")
    out = read_until(terminal, b"home=/").decode()
    name = os.path.basename(login_shell())
    assert f"zero=-{name} user={os.getuid()}" in out  # the dash: started as a login shell


def test_resize_reaches_the_shell(terminals):
    terminal = start_terminal(["/bin/sh"], cols=90, rows=20)
    terminals.append(terminal)
    terminal.write(b"stty size\n")
    read_until(terminal, b"20 90")
    terminal.resize(132, 43)
    assert terminal.size() == (132, 43)
    terminal.write(b"stty size\n")
    read_until(terminal, b"43 132")


def test_a_raw_terminal_passes_bytes_unchanged(terminals):
    terminal = start_terminal(["/bin/sh", "-c", "printf 'a\\nb\\n'"], raw=True)
    terminals.append(terminal)
    assert read_until(terminal, b"b\n") == b"a\nb\n"
    assert terminal.wait(5) == 0


def test_the_environment_is_a_login_one_without_the_session_process_secrets(monkeypatch):
    monkeypatch.setenv("HELPLINE_SERVER_TOKEN", "secret")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = shell_environment("/bin/sh", "xterm")
    assert "HELPLINE_SERVER_TOKEN" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["TERM"] == "xterm" and env["SHELL"] == "/bin/sh"
    assert env["HOME"] == pwd.getpwuid(os.getuid()).pw_dir


def test_ending_leaves_no_process_behind(terminals):
    terminal = start_terminal(["/bin/sh"])
    terminals.append(terminal)
    # A background job (its own process group under job control), a stopped job, and a process
    # that ignores the hangup: all of them must be gone after end().
    terminal.write(b"sleep 300 & echo bg=$!\n")
    terminal.write(b"sh -c 'trap \"\" HUP; exec sleep 301' & echo deaf=$!\n")
    terminal.write(b"sleep 302 & kill -STOP $! ; echo stopped=$!; echo ok=$((40+2))\n")
    out = read_until(terminal, b"ok=42").decode()
    pids = [int(re.search(rf"{name}=(\d+)", out).group(1)) for name in ("bg", "deaf", "stopped")]
    assert all(_alive(pid) for pid in pids)
    assert len(terminal.members()) >= 4
    started = time.monotonic()
    terminal.end(grace=0.5)
    assert time.monotonic() - started < 4
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(ProcessLookupError):
        os.killpg(terminal.pgid, 0)
    assert terminal.members() == []
    assert terminal.ended and terminal.end() is not None  # a second end is harmless


def test_on_windows_sessions_say_they_are_not_available(monkeypatch):
    monkeypatch.setattr(session_pty, "fcntl", None)
    with pytest.raises(HelplineError, match="sessions are not available on Windows yet"):
        start_terminal(["/bin/sh"])
    with pytest.raises(HelplineError, match="not available on Windows"):
        login_shell()


def test_a_piped_command_reads_its_input_to_the_end_and_keeps_errors_apart():
    from agent.session.pty import start_piped

    command = start_piped(["/bin/sh", "-c", "wc -c; echo oops >&2; exit 4"], env=shell_environment("/bin/sh", "dumb"))
    try:
        command.write(b"x" * 100000)
        command.close_input()
        output = errors = b""
        while chunk := command.read():
            output += chunk
        while chunk := command.read_errors():
            errors += chunk
        assert output.strip() == b"100000"
        assert errors == b"oops\n"
        assert command.wait(5) == 4
        with pytest.raises(OSError):
            command.write(b"more")  # the input is closed
    finally:
        command.end(grace=0.3)
    assert command.ended and command.members() == []
